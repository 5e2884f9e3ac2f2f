// The plan editor: tap a zone to treat it, tap again to exclude it, once more to leave it out.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const draft = JSON.parse(document.getElementById("draft").textContent);
  const zones = JSON.parse(document.getElementById("zones").textContent);
  const info = Object.fromEntries(zones.map(z => [z.zone, z]));
  const state = {};  // zone -> {target, max} when treated
  const excluded = new Set(draft.exclusions || []);
  for (const [z, t] of Object.entries(draft.zones || {})) state[z] = {target: t.target_passes, max: t.max_passes};

  function paint() {
    document.querySelectorAll("#chart path.zone").forEach(p => {
      const z = p.dataset.zone;
      p.classList.toggle("treat", z in state);
      p.classList.toggle("exclude", excluded.has(z));
      p.setAttribute("aria-pressed", z in state ? "true" : "false");
    });
    const body = document.querySelector("#zone-list tbody");
    body.innerHTML = "";
    for (const z of Object.keys(state).sort()) {
      const tr = document.createElement("tr");
      tr.dataset.zone = z;
      tr.innerHTML = `<td>${z.replace(/_/g, " ")}</td>
        <td><input type="number" min="1" max="50" class="target" value="${state[z].target}" aria-label="target passes ${z}"></td>
        <td><input type="number" min="1" max="50" class="max" value="${state[z].max}" aria-label="most passes ${z}"></td>`;
      tr.querySelector(".target").addEventListener("change", e => { state[z].target = parseInt(e.target.value, 10); });
      tr.querySelector(".max").addEventListener("change", e => { state[z].max = parseInt(e.target.value, 10); });
      body.appendChild(tr);
    }
    if (!Object.keys(state).length) body.innerHTML = '<tr><td class="none">Tap zones on the chart.</td></tr>';
    document.getElementById("excluded-list").textContent =
      excluded.size ? "Excluded by this plan: " + [...excluded].sort().join(", ").replace(/_/g, " ") : "";
  }

  document.querySelectorAll("#chart path.zone").forEach(p => {
    if (p.dataset.kind === "exclusion") return;  // atlas exclusions always apply
    p.addEventListener("click", () => {
      const z = p.dataset.zone;
      if (z in state) { delete state[z]; excluded.add(z); }
      else if (excluded.has(z)) { excluded.delete(z); }
      else { state[z] = {target: 2, max: 3}; }
      paint();
    });
  });

  document.getElementById("save-plan").addEventListener("click", async () => {
    const msg = document.getElementById("plan-message");
    const body = {
      name: document.getElementById("plan-name").value.trim(),
      margin_mm: parseFloat(document.getElementById("margin").value),
      ttl_ms: parseInt(document.getElementById("ttl").value, 10),
      stop_at_target: document.getElementById("stop-at-target").checked,
      zones: Object.fromEntries(Object.entries(state).map(([z, t]) => [z, {target_passes: t.target, max_passes: t.max}])),
      exclusions: [...excluded],
      body_area: draft.body_area || "",
    };
    msg.className = ""; msg.textContent = "saving…";
    const r = await fetch(location.pathname.replace(/\/new$/, ""), {
      method: "POST", headers: {"Content-Type": "application/json", "X-Guidance-Token": csrf}, body: JSON.stringify(body)});
    const j = await r.json();
    if (j.ok) {
      msg.className = "ok";
      msg.textContent = `Saved: ${j.file} (${j.status}, version ${j.version})`;
      msg.dataset.next = j.next;
    } else {
      msg.className = "error";
      msg.textContent = j.error;
    }
  });
  paint();
})();
