// The status page: polls /status/summary every second and redraws in place (no reload).
// Status is always spelled out (word + icon); colours only repeat it. Transitions are
// announced through a polite live region, never the whole page every second.
"use strict";

(function () {
  const SUMMARY_URL = "/status/summary";
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2500; // a frozen gateway never answers: give up and say so
  const HISTORY_MS = 5 * 60 * 1000; // sparkline span

  const ICONS = { UP: "✓", DOWN: "✕", DEGRADED: "!", UNKNOWN: "?" };
  const BREAKERS = {
    closed: { icon: "✓", text: "closed — calls flow" },
    open: { icon: "✕", text: "open — failing fast" },
    half_open: { icon: "◐", text: "half-open — probing" },
  };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const rttHistory = new Map(); // instance id → [{t, rtt, seen}]
  const announced = new Map(); // what the live region last said about each thing
  let lastGood = null; // Date of the last summary received
  let reachable = null;

  const $ = (selector, root) => (root || document).querySelector(selector);

  function setBadge(element, status) {
    element.dataset.status = status;
    $(".badge .icon", element).textContent = ICONS[status] || "?";
    $(".badge .text", element).textContent = status;
  }

  function announce(key, message) {
    if (announced.get(key) === message) return;
    const first = !announced.has(key);
    announced.set(key, message);
    if (first) return; // the first reading is the page itself, not news
    const line = document.createElement("p");
    line.textContent = message;
    const region = $("#announcer");
    region.appendChild(line);
    while (region.childElementCount > 5) region.firstElementChild.remove();
  }

  function formatAgo(seconds) {
    if (seconds < 1) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }

  function formatTime(date) {
    return date.toLocaleTimeString([], {
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    });
  }

  function setGateway(ok, detail) {
    const line = $("#gateway");
    if (ok) {
      line.dataset.state = "live";
      $(".icon", line).textContent = "●";
      $("#gateway-text").textContent = `Live · updated ${formatTime(lastGood)}`;
    } else {
      line.dataset.state = "unreachable";
      $(".icon", line).textContent = "⚠";
      const since = lastGood ? ` · data below is from ${formatTime(lastGood)}` : "";
      $("#gateway-text").textContent = `Gateway unreachable (${detail})${since}`;
    }
    document.body.classList.toggle("stale", !ok && lastGood !== null);
    // Announced once per change through the live region (a role=alert here would repeat it).
    if (reachable !== ok) {
      announce("gateway", ok ? "Gateway reachable again" : "Gateway unreachable");
      reachable = ok;
    }
  }

  function recordRtt(instance, now) {
    if (instance.rtt_ms === null || instance.rtt_ms === undefined) return;
    const points = rttHistory.get(instance.id) || [];
    const last = points[points.length - 1];
    if (!last || last.seen !== instance.last_seen) {
      points.push({ t: now, rtt: instance.rtt_ms, seen: instance.last_seen });
    }
    while (points.length && now - points[0].t > HISTORY_MS) points.shift();
    rttHistory.set(instance.id, points);
  }

  function sparkline(points, now) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("viewBox", "0 0 100 24");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const base = document.createElementNS(SVG_NS, "line");
    base.setAttribute("class", "baseline");
    for (const [k, v] of [["x1", 0], ["x2", 100], ["y1", 23], ["y2", 23]]) base.setAttribute(k, v);
    svg.appendChild(base);
    if (points.length < 2) {
      svg.setAttribute("aria-label", "RTT history: not enough samples yet");
      return svg;
    }
    const rtts = points.map((p) => p.rtt);
    const max = Math.max(...rtts, 1);
    // The line spans what this page has seen (at least 30 s), up to five minutes.
    const span = Math.min(HISTORY_MS, Math.max(30 * 1000, now - points[0].t));
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute(
      "points",
      points
        .map((p) => {
          const x = 100 - ((now - p.t) / span) * 100;
          const y = 22 - (p.rtt / max) * 20;
          return `${x.toFixed(2)},${y.toFixed(2)}`;
        })
        .join(" "),
    );
    svg.appendChild(line);
    const min = Math.min(...rtts);
    svg.setAttribute(
      "aria-label",
      `RTT over the last ${Math.round((now - points[0].t) / 60000) || "<1"} min: ` +
        `${min.toFixed(1)} to ${max.toFixed(1)} ms`,
    );
    return svg;
  }

  function serviceCard(name) {
    let card = $(`.service[data-service="${name}"]`);
    if (card) return card;
    card = $("#service-template").content.firstElementChild.cloneNode(true);
    card.dataset.service = name;
    card.setAttribute("aria-labelledby", `service-${name}`);
    const title = $(".name", card);
    title.id = `service-${name}`;
    title.textContent = name;
    $("caption", card).textContent = `Instances of ${name}`;
    $("#services").appendChild(card);
    return card;
  }

  function instanceRow(instance, generatedAt, now) {
    const row = document.createElement("tr");
    row.dataset.instance = instance.address;
    row.dataset.status = instance.status;

    const address = document.createElement("td");
    address.className = "address";
    address.textContent = instance.address;
    const version = document.createElement("span");
    version.className = "version";
    version.textContent = `v${instance.version} · ${instance.id.slice(0, 8)}`;
    address.appendChild(version);

    const status = document.createElement("td");
    status.className = `instance-status status-${instance.status}`;
    status.textContent = `${ICONS[instance.status] || "?"} ${instance.status}`;

    const seen = document.createElement("td");
    seen.className = "last-seen";
    const when = new Date(instance.last_seen);
    const time = document.createElement("time");
    time.dateTime = instance.last_seen;
    time.title = when.toISOString();
    time.textContent = formatAgo(Math.max(0, (generatedAt - when) / 1000));
    seen.appendChild(time);

    const rtt = document.createElement("td");
    rtt.className = "rtt";
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = instance.rtt_ms === null ? "–" : `${instance.rtt_ms.toFixed(1)} ms`;
    rtt.append(value, sparkline(rttHistory.get(instance.id) || [], now));

    row.append(address, status, seen, rtt);
    return row;
  }

  function render(summary) {
    const now = Date.now();
    const generatedAt = new Date(summary.generated_at);
    const health = summary.health;

    setBadge($("#overall"), health.status);
    announce("overall", `System is ${health.status}`);
    setBadge($("#broker"), health.broker.status);
    announce("broker", `Kafka broker is ${health.broker.status}`);

    const traffic = summary.traffic;
    const perMinute = (n) => (traffic.covered_s >= 1 ? (n * 60) / traffic.covered_s : n);
    const partial = traffic.covered_s < traffic.window_s;
    $("#requests .figure").textContent = Math.round(perMinute(traffic.requests)).toString();
    $("#errors .figure").textContent = Math.round(perMinute(traffic.errors)).toString();
    for (const id of ["#requests", "#errors"]) {
      $(`${id} .window`).textContent = partial
        ? `last ${Math.round(traffic.covered_s)} s`
        : "last minute";
    }
    const ratio = traffic.requests ? traffic.errors / traffic.requests : 0;
    $("#errors").dataset.status = traffic.errors === 0 ? "UP" : ratio > 0.05 ? "DOWN" : "DEGRADED";
    $("#errors .unit").textContent =
      traffic.requests ? `per min · ${(ratio * 100).toFixed(1)}%` : "per min";

    for (const [name, service] of Object.entries(health.services)) {
      const card = serviceCard(name);
      setBadge(card, service.status);
      announce(`service:${name}`, `${name} is ${service.status}`);

      const state = summary.breakers[name] || "closed";
      const breaker = BREAKERS[state] || { icon: "?", text: state };
      const line = $(".breaker", card);
      line.dataset.state = state;
      $(".icon", line).textContent = breaker.icon;
      $(".breaker-state", line).textContent = breaker.text;
      announce(`breaker:${name}`, `${name} circuit breaker ${breaker.text}`);

      service.instances.forEach((instance) => recordRtt(instance, now));
      const rows = service.instances.map((i) => instanceRow(i, generatedAt, now));
      $("tbody", card).replaceChildren(...rows);
      card.classList.toggle("has-instances", rows.length > 0);
    }
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(SUMMARY_URL, {
        cache: "no-store",
        signal: controller.signal,
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const summary = await response.json();
      lastGood = new Date();
      render(summary);
      setGateway(true);
    } catch (error) {
      const detail = error.name === "AbortError" ? "no answer" : error.message || "no answer";
      setGateway(false, detail === "Failed to fetch" ? "connection failed" : detail);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
