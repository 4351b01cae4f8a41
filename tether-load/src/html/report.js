// Draws the load-test report from the JSON in #data: line charts of the
// run over time, the latency distributions as HDR percentile plots, and
// bars of failures and closes, all as inline SVG. Nothing is fetched.
// When done, <body data-drawn="N"> counts the charts drawn; an error is
// shown on the page (#report-error) instead of failing silently.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 270, M = { left: 66, right: 34, top: 14, bottom: 40 };

  function el(tag, attrs, parent, text) {
    const node = document.createElementNS(NS, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // Numbers with units, in the unit that reads best.
  const count = (n) => Math.round(n).toLocaleString("en-US");
  const rate = (n) => (n >= 100 ? count(n) : n.toFixed(n >= 10 ? 1 : 2)) + "/s";
  function micros(us) {
    if (us < 1000) return Math.round(us) + " µs";
    if (us < 1e6) return (us / 1e3).toFixed(us < 1e4 ? 2 : 1) + " ms";
    return (us / 1e6).toFixed(2) + " s";
  }
  function seconds(s) {
    if (s > 0 && s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return (Math.round(s * 10) / 10) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }

  // Tick values: "nice" steps for a linear axis, powers of ten for a log one.
  function linearTicks(max) {
    if (!(max > 0)) return [0, 1];
    const raw = max / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
    const ticks = [];
    for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(v);
    if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }
  function logTicks(min, max) {
    // No values (a run without round trips): an empty decade.
    if (!Number.isFinite(min) || !Number.isFinite(max)) return [1, 10];
    const lo = Math.floor(Math.log10(Math.max(min, 1))), hi = Math.max(Math.ceil(Math.log10(Math.max(max, 1))), lo + 1);
    const ticks = [];
    for (let e = lo; e <= hi; e++) ticks.push(Math.pow(10, e));
    return ticks;
  }

  // A chart in `figure`: series of [x, y] points as lines over axes.
  // opts: { label, x: {format, ticks?, max?}, y: {format, log}, series: [{name, points}] }
  function lineChart(figure, opts) {
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", tabindex: "0" });
    figure.insertBefore(svg, figure.querySelector("figcaption"));
    el("title", {}, svg, opts.label);
    const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    const all = opts.series.flatMap((s) => s.points).filter((p) => !opts.y.log || p[1] > 0);
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    // The x axis ends where the data does (a tick past it is dropped).
    const xTop = opts.x.max !== undefined ? opts.x.max : Math.max(1, ...xs);
    const xTicks = (opts.x.ticks || linearTicks(xTop)).filter((t) => t <= xTop * 1.0001);
    const yTicks = opts.y.log ? logTicks(Math.min(...ys), Math.max(...ys)) : linearTicks(Math.max(...ys, 0));
    const y0 = yTicks[0], y1 = yTicks[yTicks.length - 1];
    const sx = (x) => M.left + (x / xTop) * pw;
    const sy = opts.y.log
      ? (y) => M.top + ph - ((Math.log10(y) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0))) * ph
      : (y) => M.top + ph - ((y - y0) / (y1 - y0 || 1)) * ph;

    const grid = el("g", { class: "grid" }, svg);
    for (const t of yTicks) {
      const g = el("g", { class: "tick" }, grid);
      el("line", { x1: M.left, x2: M.left + pw, y1: sy(t), y2: sy(t) }, g);
      el("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, g, opts.y.format(t));
    }
    xTicks.forEach((t, i) => {
      const g = el("g", { class: "tick" }, grid);
      el("line", { x1: sx(t), x2: sx(t), y1: M.top, y2: M.top + ph }, g);
      // The last label ends at its tick, so it stays inside the chart.
      const anchor = i === xTicks.length - 1 && sx(t) > W - M.right - 30 ? "end" : "middle";
      el("text", { x: sx(t), y: M.top + ph + 16, "text-anchor": anchor }, g, opts.x.format(t));
    });
    const axis = el("g", { class: "axis" }, svg);
    el("path", { d: `M${M.left},${M.top}V${M.top + ph}H${M.left + pw}`, fill: "none" }, axis);
    el("text", { x: M.left + pw / 2, y: H - 4, "text-anchor": "middle" }, axis, opts.x.label);

    let drawn = 0;
    opts.series.forEach((s, i) => {
      let d = "", pen = "M", n = 0;
      for (const [x, y] of s.points) {
        if (opts.y.log && !(y > 0)) { pen = "M"; continue; }
        d += `${pen}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = "L";
        n++;
      }
      if (n === 0) return;
      // A lone point would draw nothing as a line: a dot too.
      el("path", { class: `series s${i}`, d, "data-series": s.name, "data-points": n }, svg);
      if (n === 1) {
        const [x, y] = s.points.find((p) => !opts.y.log || p[1] > 0);
        el("circle", { class: `s${i}`, cx: sx(x), cy: sy(y), r: 3 }, svg);
      }
      drawn++;
    });
    if (drawn === 0) el("text", { class: "empty", x: M.left + pw / 2, y: M.top + ph / 2, "text-anchor": "middle" }, svg, "no samples in this run");
    legend(figure, opts.series.map((s) => s.name));
    hover(figure, svg, opts, sx, sy, pw);
    return drawn;
  }

  function legend(figure, names) {
    const ul = document.createElement("ul");
    ul.className = "legend";
    names.forEach((name, i) => {
      const li = document.createElement("li");
      li.innerHTML = `<i class="s${i}"></i>`;
      li.appendChild(document.createTextNode(name));
      ul.appendChild(li);
    });
    figure.insertBefore(ul, figure.querySelector("figcaption"));
  }

  // A cursor and the values under it, by mouse or by arrow keys.
  function hover(figure, svg, opts, sx, sy, pw) {
    const xs = [...new Set(opts.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    if (xs.length === 0) return;
    const tip = document.createElement("div");
    tip.className = "tip";
    figure.appendChild(tip);
    const cursor = el("line", { class: "cursor", y1: M.top, y2: H - M.bottom, visibility: "hidden" }, svg);
    let at = -1;
    function show(i) {
      at = Math.max(0, Math.min(xs.length - 1, i));
      const x = xs[at];
      cursor.setAttribute("x1", sx(x));
      cursor.setAttribute("x2", sx(x));
      cursor.setAttribute("visibility", "visible");
      const lines = [opts.x.format(x, true)];
      for (const s of opts.series) {
        const p = s.points.find((q) => q[0] === x);
        if (p) lines.push(`${s.name}: ${opts.y.format(p[1], true)}`);
      }
      tip.textContent = lines.join("\n");
      tip.style.display = "block";
      const box = svg.getBoundingClientRect(), scale = box.width / W;
      const left = sx(x) * scale + 14;
      tip.style.left = (left + tip.offsetWidth > box.width ? left - tip.offsetWidth - 28 : left) + 12 + "px";
      tip.style.top = M.top * scale + 12 + "px";
    }
    function hide() {
      cursor.setAttribute("visibility", "hidden");
      tip.style.display = "none";
    }
    svg.addEventListener("mousemove", (e) => {
      const box = svg.getBoundingClientRect();
      const x = ((e.clientX - box.left) / box.width) * W;
      let best = 0;
      xs.forEach((v, i) => { if (Math.abs(sx(v) - x) < Math.abs(sx(xs[best]) - x)) best = i; });
      show(best);
    });
    svg.addEventListener("mouseleave", hide);
    svg.addEventListener("blur", hide);
    svg.addEventListener("keydown", (e) => {
      if (e.key === "ArrowRight") { show(at + 1); e.preventDefault(); }
      if (e.key === "ArrowLeft") { show(at < 0 ? xs.length - 1 : at - 1); e.preventDefault(); }
      if (e.key === "Escape") hide();
    });
  }

  // An HDR percentile plot: x is "how many nines" (-log10(1 - q)), so the
  // tail gets as much room as the median; y is the latency, log scale.
  function distribution(latency) {
    const total = latency.histogram.reduce((sum, [, c]) => sum + c, 0);
    if (total === 0) return [];
    const nines = (q) => -Math.log10(Math.max(1 - q, 1 / total));
    const points = [];
    let cum = 0;
    for (const [value, c] of latency.histogram) {
      points.push([nines(cum / total), value]);
      cum += c;
      points.push([nines(cum / total), value]);
    }
    return points;
  }
  // 0 -> "0%", 1 -> "90%", 2 -> "99%", 5 -> "99.999%"; between ticks, as
  // many decimals as the nines need.
  const percentileLabel = (x) => {
    if (x === 0) return "0%";
    if (Number.isInteger(x)) return x === 1 ? "90%" : "99" + (x > 2 ? "." + "9".repeat(x - 2) : "") + "%";
    return (100 * (1 - Math.pow(10, -x))).toFixed(Math.max(1, Math.ceil(x) - 1)) + "%";
  };

  // Horizontal bars, one per [label, value]; zeros drawn as empty bars.
  function bars(figure, label, items) {
    const rowH = 24, top = 8, left = 190, right = 80;
    const h = top * 2 + rowH * Math.max(items.length, 1);
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${h}`, role: "img", tabindex: "0" });
    figure.insertBefore(svg, figure.querySelector("figcaption"));
    el("title", {}, svg, label);
    const max = Math.max(1, ...items.map((i) => i[1]));
    items.forEach(([name, value, cls], i) => {
      const y = top + i * rowH;
      el("text", { class: "bar-label", x: left - 8, y: y + 16, "text-anchor": "end" }, svg, name);
      el("rect", { class: `bar ${cls}`, x: left, y: y + 4, height: rowH - 8, width: Math.max(0, ((W - left - right) * value) / max), "data-value": value }, svg);
      el("text", { class: "bar-value", x: left + ((W - left - right) * value) / max + 6, y: y + 16 }, svg, count(value));
    });
    return 1;
  }

  function table(id, rows) {
    const body = document.querySelector(`#${id} tbody`);
    for (const [k, v] of rows) {
      const tr = document.createElement("tr");
      const th = document.createElement("th"), td = document.createElement("td");
      th.textContent = k;
      td.textContent = v;
      tr.append(th, td);
      body.appendChild(tr);
    }
  }

  function draw(data) {
    const s = data.summary, c = s.connections;
    // The run starts from nothing: a point at 0 s before the first sample.
    const zero = { t_s: 0, attempted: 0, established: 0, online: 0, in_flight: 0, failed: 0, closed: 0, heartbeats: 0, lines_in: 0, lines_out: 0, rtt_count: 0 };
    const pts = data.points.length ? [zero].concat(data.points) : [];
    const time = { label: "time into the run", format: (t, long) => (long ? "at " : "") + seconds(t) };
    const per = (key) => pts.map((p, i) => {
      const prev = i > 0 ? pts[i - 1] : { t_s: 0, [key]: 0 };
      const dt = p.t_s - prev.t_s;
      return [p.t_s, dt > 0 ? (p[key] - prev[key]) / dt : 0];
    });
    const series = (key) => pts.map((p) => [p.t_s, p[key]]);
    const fig = (id) => document.getElementById(id);
    let charts = 0;

    charts += lineChart(fig("connected"), {
      label: "Collars connected over time",
      x: time,
      y: { format: count },
      series: [
        { name: "online", points: series("online") },
        { name: "connecting", points: series("in_flight") },
        { name: "failed (total)", points: series("failed") },
        { name: "closed by the gateway (total)", points: series("closed") },
      ],
    }) > 0;
    charts += lineChart(fig("rate"), {
      label: "Connect rate",
      x: time,
      y: { format: (v, long) => (long ? rate(v) : count(v)) },
      series: [
        // Drawn after the attempts, so it shows where the two agree.
        { name: "attempted per second", points: per("attempted") },
        { name: "established per second", points: per("established") },
        { name: "failed per second", points: per("failed") },
      ],
    }) > 0;
    const rtt = pts.filter((p) => p.rtt_count > 0);
    charts += lineChart(fig("rtt-time"), {
      label: "Round-trip time percentiles over time",
      x: time,
      y: { format: micros, log: true },
      series: ["p50", "p90", "p99", "max"].map((q) => ({ name: q, points: rtt.map((p) => [p.t_s, p["rtt_" + q]]) })),
    }) > 0;
    const dists = [["PING round trip", s.rtt_us], ["connect", s.connect_latency_us], ["IDENTIFY to OK", s.handshake_latency_us]];
    // The axis ends at the most nines the samples resolve (1 in count).
    const top = Math.max(2, ...dists.map(([, l]) => Math.log10(Math.max(l.count, 1))));
    charts += lineChart(fig("rtt-dist"), {
      label: "Latency distribution (HDR percentiles, log scale)",
      x: { label: "percentile", format: (x) => percentileLabel(x), ticks: Array.from({ length: Math.floor(top) + 1 }, (_, i) => i), max: top },
      y: { format: micros, log: true },
      series: dists.map(([name, l]) => ({ name: `${name} (${count(l.count)})`, points: distribution(l) })),
    }) > 0;
    charts += lineChart(fig("traffic"), {
      label: "Heartbeats and lines",
      x: time,
      y: { format: (v, long) => (long ? rate(v) : count(v)) },
      series: [
        { name: "lines in per second", points: per("lines_in") },
        { name: "lines out per second", points: per("lines_out") },
        // Last, on top: in an idle fleet every line in is a heartbeat.
        { name: "heartbeat PINGs per second", points: per("heartbeats") },
      ],
    }) > 0;
    const f = s.failed, closed = s.closed_by_server;
    const items = [
      ["refused", f.refused, "s3"], ["timeout", f.timeout, "s3"], ["reset", f.reset, "s3"],
      ["addr-not-available", f.addr_not_available, "s3"], ["fd-limit", f.fd_limit, "s3"], ["other failure", f.other, "s3"],
      ...Object.entries(closed.bye).map(([reason, n]) => [`BYE ${reason}`, n, "s1"]),
      ["closed without BYE", closed.without_bye, "s1"],
    ];
    charts += bars(fig("ends"), "Failures and closes by reason", items);

    table("figures-table", [
      ["collars", `${count(s.collars)} against ${s.target} (${s.processes} process${s.processes === 1 ? "" : "es"})`],
      ["length of the run", seconds(s.elapsed_s)],
      ["established", `${count(c.established)} of ${count(c.attempted)} attempted`],
      ["connect phase", `${seconds(s.connect_phase_s)}, ${rate(s.connects_per_s)}`],
      ["failed / closed by the gateway / lost", `${count(c.failed)} / ${count(c.closed_by_server)} / ${count(c.lost)}`],
      ["open / still connecting at the end", `${count(c.open_at_end)} / ${count(c.pending_at_end)}`],
      ["RTT p50 / p99 / p99.9 / max", s.rtt_us.count ? [s.rtt_us.p50, s.rtt_us.p99, s.rtt_us.p999, s.rtt_us.max].map(micros).join(" / ") : "no samples"],
      ["round trips", s.rtt.active ? `${count(s.rtt_us.count)}, ${rate(s.rtt.per_s)} from ${count(s.rtt.active)} collars in a closed loop` : count(s.rtt_us.count)],
      ["connect p50 / p99", s.connect_latency_us.count ? [s.connect_latency_us.p50, s.connect_latency_us.p99].map(micros).join(" / ") : "no samples"],
      ["heartbeats received / answered", `${count(s.heartbeats.received)} / ${count(s.heartbeats.answered)}`],
      ["location queries received / answered", `${count(s.location_queries.received)} / ${count(s.location_queries.answered)}`],
      ["lines in / out", `${count(s.lines.in)} / ${count(s.lines.out)}`],
    ]);
    table("settings-table", data.settings.concat([
      ["sample interval", seconds(data.interval_s) + (data.dropped ? ` (${data.dropped} samples past the cap dropped)` : "")],
      ["command", data.command],
    ]));
    document.body.dataset.drawn = String(charts);
  }

  try {
    draw(JSON.parse(document.getElementById("data").textContent));
  } catch (e) {
    const pre = document.createElement("pre");
    pre.id = "report-error";
    pre.textContent = "The report could not be drawn: " + (e && e.stack ? e.stack : e);
    document.querySelector("main").prepend(pre);
    document.body.dataset.drawn = "error";
  }
})();
