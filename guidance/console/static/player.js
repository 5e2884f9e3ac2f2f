// The browser player: frames composed on the server (the same picture as `guidance replay`), navigation here.
"use strict";
(function () {
  const sid = document.getElementById("player").dataset.sid;
  const $ = id => document.getElementById(id);
  let d = null, frame = 0, playing = false, timer = null, loading = false, want = null;
  const COLORS = {ok: "#0072B2", not_armed: "#888", service_stopping: "#888"};
  const TRACK = new Set(["no_face", "other_face", "face_stale", "low_presence", "band_unregistered", "band_lost", "band_moved",
                         "tip_lost", "tip_low_confidence", "camera_stalled", "patch_lost", "patch_stale", "neck_unreferenced"]);
  const colour = r => COLORS[r] || (TRACK.has(r) ? "#E69F00" : "#D55E00");

  function show(i) {
    frame = Math.max(0, Math.min(d.n - 1, i));
    want = frame;
    if (!loading) load();
    const cov = d.coverage.filter(c => c[0] <= frame);
    const pct = cov.length ? (100 * cov[cov.length - 1][1]).toFixed(1) : "0.0";
    $("p-info").textContent = `frame ${frame + 1}/${d.n} · t ${d.t_s[frame].toFixed(2)} s · ` +
      (d.permit[frame] ? "PERMIT" : "deny: " + d.reason[frame]) + ` · mean coverage at target ${pct}%`;
    $("p-info").dataset.frame = frame;
    $("cursor").setAttribute("x", (1000 * (frame + 0.5) / d.n).toFixed(1));
    $("cov-cursor").setAttribute("x", (1000 * (frame + 0.5) / d.n).toFixed(1));
  }
  function load() {
    if (want === null) return;
    const i = want; want = null; loading = true;
    const img = $("frame");
    img.onload = img.onerror = () => { loading = false; img.dataset.frame = i; if (want !== null) load(); };
    img.src = `/sessions/${sid}/player/frame/${i}.jpg`;
  }
  function stop() { playing = false; clearInterval(timer); $("p-play").textContent = "▶ play"; }
  function play() {
    if (frame >= d.n - 1) show(0);
    playing = true; $("p-play").textContent = "❚❚ pause";
    const t0 = performance.now(), f0 = d.t_s[frame];
    timer = setInterval(() => {
      const t = f0 + (performance.now() - t0) / 1000;
      let i = frame; while (i + 1 < d.n && d.t_s[i + 1] <= t) i++;
      if (i !== frame) show(i);
      if (i >= d.n - 1) stop();
    }, 50);
  }
  function jump(list, what) {
    const next = list.find(f => f > frame);
    stop();
    if (next === undefined) { $("p-info").textContent = `no later ${what}`; return; }
    show(next);
  }
  function draw() {
    const tl = $("timeline"), n = d.n, w = 1000 / n;
    let s = "";
    let i = 0;
    while (i < n) {
      let j = i; const r = d.permit[i] ? "ok" : d.reason[i];
      while (j + 1 < n && (d.permit[j + 1] ? "ok" : d.reason[j + 1]) === r) j++;
      s += `<rect x="${(i * w).toFixed(2)}" y="20" width="${((j - i + 1) * w).toFixed(2)}" height="24" fill="${colour(r)}"><title>${r}</title></rect>`;
      i = j + 1;
    }
    for (const p of d.pulses) s += `<line x1="${((p + 0.5) * w).toFixed(1)}" x2="${((p + 0.5) * w).toFixed(1)}" y1="4" y2="18" stroke="#009E73" stroke-width="2"/>`;
    for (const v of d.violations) s += `<path class="violation" d="M${((v + 0.5) * w).toFixed(1)},46 l6,12 l-12,0 z" fill="#D55E00" stroke="#000"/>`;
    s += `<rect id="cursor" x="0" y="0" width="3" height="60" fill="#F0E442" stroke="#000" stroke-width="0.5"/>`;
    tl.innerHTML = s;
    tl.onclick = e => { const r = tl.getBoundingClientRect(); stop(); show(Math.floor((e.clientX - r.left) / r.width * n)); };
    const cv = $("coverage");
    let pts = "0,78";
    for (const [f, c] of d.coverage) pts += ` ${((f + 0.5) * w).toFixed(1)},${(78 - 74 * c).toFixed(1)}`;
    pts += ` 1000,${d.coverage.length ? (78 - 74 * d.coverage[d.coverage.length - 1][1]).toFixed(1) : 78}`;
    cv.innerHTML = `<text x="4" y="12" font-size="11">coverage at target (mean of planned zones)</text>` +
      `<polyline points="${pts}" fill="none" stroke="#0072B2" stroke-width="2"/>` +
      `<rect id="cov-cursor" x="0" y="0" width="3" height="80" fill="#F0E442"/>`;
  }
  $("p-start").onclick = () => { stop(); show(0); };
  $("p-back").onclick = () => { stop(); show(frame - 1); };
  $("p-step").onclick = () => { stop(); show(frame + 1); };
  $("p-play").onclick = () => (playing ? stop() : play());
  $("p-denial").onclick = () => jump(d.denials.map(e => e.start), "denial");
  $("p-violation").onclick = () => jump(d.violations, "violation");
  fetch(`/sessions/${sid}/player/data.json`).then(r => r.json()).then(j => {
    if (!j.ok) { $("p-info").textContent = j.error; return; }
    d = j; draw(); show(0);
  });
})();
