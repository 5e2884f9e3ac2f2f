// The live page: state over a websocket (which is also this browser's heartbeat), commands over POST.
// If this page closes or stops pinging, the console tells the session and it disarms within a second.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const $ = id => document.getElementById(id);
  let ws = null, pinger = null, last = null, ended = false;

  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live/ws");
    ws.onopen = () => {
      const ping = () => { if (ws.readyState === 1) ws.send(JSON.stringify({type: "ping"})); };
      ping();
      pinger = setInterval(ping, 200);
    };
    ws.onmessage = ev => { last = JSON.parse(ev.data); render(last); };
    ws.onclose = () => {
      clearInterval(pinger);
      if (!ended) { banner("disconnected", "NO LINK", "the console cannot be reached", "the session disarms by itself"); setTimeout(connect, 1000); }
    };
  }

  function banner(cls, word, reason, next) {
    $("banner").className = "banner " + cls;
    $("banner-word").textContent = word;
    $("banner-reason").textContent = reason;
    $("banner-next").textContent = next || "";
  }

  function fmt(s) { s = Math.max(0, Math.floor(s)); return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"); }

  function render(m) {
    if (m.ended || m.running === false) {
      ended = true;
      banner("ended", "ENDED", m.error ? "the session failed: " + m.error : "the session has stopped", "open the review to see the report");
      if (m.session) $("command-message").innerHTML = `<a class="button big primary" id="review-link" href="/sessions/${m.session}">Review the session</a>`;
      return;
    }
    const st = m.state || {};
    if (m.starting) { banner("disarmed", "STARTING", "loading the models and opening the camera…", ""); }
    else if (!st.armed) { banner("disarmed", "DISARMED", m.words, st.reason === "not_armed" ? "check the client and the plan, then press ARM" : m.next); }
    else if (st.permit) { banner("permit", "PERMIT", st.zone ? st.zone.replace(/_/g, " ") : "", m.next); }
    else { banner("deny", "DENY", m.words, m.next); }
    if (st.paused) { $("banner-word").textContent += " · PAUSED"; }
    $("banner").dataset.reason = st.reason || "";
    $("elapsed").textContent = fmt(st.elapsed_s || m.elapsed_s || 0);
    let link = st.link || "–";
    if (st.key_refusals) link += ` — controller key refused (${st.key_refusals}×)`;
    $("link").textContent = link;
    $("link").className = /refused|silent|failed/.test(link) ? "bad" : (/connected|resumed/.test(link) ? "ok" : "");
    $("pulses").textContent = st.pulses ?? 0;
    $("violations").textContent = st.violations ?? 0;
    $("fps").textContent = st.fps ? `${st.fps} fps, latency p99 ${st.latency_ms_p99} ms` : "";
    for (const p of st.progress || []) {
      const row = document.querySelector(`#progress tr[data-zone="${p.zone}"]`);
      if (!row) continue;
      row.querySelector(".bar span").style.width = (100 * p.fraction).toFixed(0) + "%";
      row.querySelector(".pct").textContent = (100 * p.fraction).toFixed(0) + "%" + (p.over ? " OVER" : "");
    }
    $("btn-pause").textContent = st.paused ? "RESUME" : "PAUSE";
    $("btn-arm").disabled = !!st.armed;
    $("btn-disarm").disabled = !st.armed;
    const cl = $("live-checklist");
    cl.innerHTML = (m.checklist || []).map(i =>
      `<li class="${i.ok ? "pass" : (i.safety ? "block" : "warn")}" data-key="${i.key}"><b>${i.title}</b><br><small>${i.detail}</small></li>`).join("");
  }

  async function command(cmd) {
    $("command-message").textContent = cmd + "…";
    const r = await fetch("/live/" + cmd, {method: "POST", headers: {"X-Guidance-Token": csrf}});
    const j = await r.json();
    $("command-message").textContent = j.detail || (j.ok ? "done" : "refused");
    $("command-message").className = j.ok ? "ok" : "error";
    if (j.next) location.href = j.next;
  }

  $("btn-arm").onclick = () => { $("confirm").hidden = false; };
  $("confirm-cancel").onclick = () => { $("confirm").hidden = true; };
  $("confirm-arm").onclick = () => { $("confirm").hidden = true; command("arm"); };
  $("btn-disarm").onclick = () => command("disarm");
  $("btn-pause").onclick = () => command(last && last.state && last.state.paused ? "resume" : "pause");
  $("btn-stop").onclick = () => { if (confirm("Stop the session? The recording ends here.")) command("stop"); };
  async function photo(kind) {
    const r = await fetch("/live/photo/" + kind, {method: "POST", headers: {"X-Guidance-Token": csrf}});
    const j = await r.json();
    $("command-message").textContent = j.detail;
    $("command-message").className = j.ok ? "ok" : "error";
  }
  $("photo-before").onclick = () => photo("before");
  $("photo-after").onclick = () => photo("after");
  connect();
})();
