// kvod's status page: polls the admin JSON (/status, /cache) once a second,
// fills the tables and draws the last minutes of Mb/s out and sessions.
// Plain DOM and canvas: nothing is loaded from anywhere but this daemon.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300;            // samples kept: five minutes at one a second
const SPAN_MIN = 60;            // the x axis spans at least a minute
const history = { t: [], mbps: [], sessions: [] };
let last = null;                // the previous sample, for rates
const previousOctets = new Map();

function text(tag, value, cls) {
  const cell = document.createElement(tag);
  cell.textContent = value;
  if (cls) cell.className = cls;
  return cell;
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((c) => tr.appendChild(c));
    return tr;
  }));
}

function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function progress(fraction) {
  const bg = document.createElement("span");
  bg.className = "bar-bg";
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%";
  bg.appendChild(bar);
  const cell = document.createElement("td");
  cell.append(bg, (fraction * 100).toFixed(1) + " %");
  return cell;
}

function draw(canvas, values, label) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  ctx.clearRect(0, 0, w, h);
  const top = Math.max(1, ...values) * 1.15;
  ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#666"; ctx.font = "11px sans-serif";
  ctx.beginPath(); ctx.moveTo(pad, h - pad); ctx.lineTo(w - 4, h - pad); ctx.stroke();
  ctx.fillText(top.toFixed(top < 10 ? 1 : 0), 2, 12);
  ctx.fillText("0", 2, h - pad);
  ctx.fillText(`last ${Math.round(values.length * POLL_MS / 1000)} s  now ${label}`, pad, h - 6);
  if (values.length < 2) return;
  ctx.strokeStyle = "#2a7"; ctx.lineWidth = 2; ctx.beginPath();
  values.forEach((v, i) => {
    const span = Math.max(values.length, SPAN_MIN) - 1;
    const x = pad + (w - pad - 4) * i / span;
    const y = h - pad - (h - pad - 8) * v / top;
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function sessionRows(status, now, dt) {
  const rows = [];
  for (const s of status.sessions) {
    for (const [index, st] of Object.entries(s.streams)) {
      const key = s.id + "/" + index;
      const octets = st.payload_octets || 0;
      const before = previousOctets.get(key);
      previousOctets.set(key, octets);
      const mbps = before != null && dt > 0 ? (octets - before) * 8 / dt / 1e6 : 0;
      const position = st.records ? st.next_record / st.records : 0;
      rows.push([text("td", st.client || s.client), text("td", s.title), text("td", st.state || s.state),
                 text("td", "RTP/UDP " + (st.ports || "")), progress(position),
                 text("td", mbps.toFixed(2), "num"),
                 text("td", ((st.loss_fraction || 0) * 100).toFixed(1) + " %", "num"),
                 // RTCP jitter is in RTP timestamp units: 90 kHz for MPEG-TS
                 text("td", ((st.jitter || 0) / 90).toFixed(1) + " ms", "num")]);
    }
  }
  return rows;
}

async function poll() {
  try {
    const [status, cache] = await Promise.all(
      ["/status", "/cache"].map((u) => fetch(u, { cache: "no-store" }).then((r) => r.ok ? r.json() : null)));
    const now = performance.now() / 1000;
    const octets = (status.traffic && status.traffic.payload_octets) || 0;
    const dt = last ? now - last.now : 0;
    const mbps = last && dt > 0 ? Math.max(0, octets - last.octets) * 8 / dt / 1e6 : 0;
    last = { now, octets };
    history.mbps.push(mbps); history.sessions.push(status.totals.sessions);
    if (history.mbps.length > HISTORY) { history.mbps.shift(); history.sessions.shift(); }
    draw(document.getElementById("mbps"), history.mbps, mbps.toFixed(2) + " Mb/s");
    draw(document.getElementById("sessions"), history.sessions, String(status.totals.sessions));
    fillRows(document.querySelector("#session-table tbody"), sessionRows(status, now, dt));
    const eng = status.engine || {};
    document.getElementById("engine").textContent =
      (eng.description || eng.backend || "") + (eng.strategy ? " — strategy " + eng.strategy : "");
    document.getElementById("summary").textContent =
      `${status.totals.sessions} session(s), ${status.totals.playing} playing, up ${Math.round(status.uptime_s)} s`;
    if (cache) {
      document.getElementById("occupancy").textContent =
        `— ${bytes(cache.used_bytes)} used` + (cache.quota_bytes ? ` of ${bytes(cache.quota_bytes)}` : "");
      fillRows(document.querySelector("#cache-table tbody"), cache.titles.map((t) => [
        text("td", t.name), text("td", t.filling ? "filling" : t.state),
        // a title added from a local file is whole without recorded ranges
        progress(t.state === "complete" ? 1 : (t.percent || 0) / 100), text("td", bytes(t.size), "num"), text("td", String(t.hits), "num")]));
    }
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (err) {
    document.getElementById("summary").textContent = "cannot reach the daemon: " + err;
  }
}

poll();
setInterval(poll, POLL_MS);
