// A small hand-written SVG chart: requests per time bucket (errors stacked on
// top) and the p95 latency as a line on its own scale. No library: it is one
// kind of chart, and a vendored one would cost more than these lines.

import { clockTime, ms, num, s } from "./dom.js";

const H = 230;
const PAD = { left: 44, right: 52, top: 12, bottom: 26 };

/** 1, 2, 5 × 10^k at or above `value`: round numbers for an axis. */
function niceCeil(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/**
 * The chart for `/v1/stats/timeseries` buckets: `spanMs` picks how times are
 * labelled (with the day beyond 24 hours).
 */
export function timeseriesChart(buckets, bucketMs, spanMs, width = 800) {
  // Drawn at the width it is shown at, so its text keeps its size on a phone.
  const W = Math.max(320, Math.round(width));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const n = Math.max(buckets.length, 1);
  const slot = innerW / n;
  const barW = Math.max(1, slot * 0.78);
  const maxRequests = niceCeil(Math.max(0, ...buckets.map((b) => b.requests)));
  const latencies = buckets.map((b) => (b.latency_ms ? b.latency_ms.p95 : null));
  const maxLatency = niceCeil(Math.max(0, ...latencies.filter((v) => v !== null)));
  const y = (value) => PAD.top + innerH - (innerH * value) / maxRequests;
  const yLatency = (value) => PAD.top + innerH - (innerH * value) / maxLatency;
  const withDay = spanMs > 24 * 3600 * 1000;
  const total = buckets.reduce((sum, b) => sum + b.requests, 0);
  const errors = buckets.reduce((sum, b) => sum + b.errors, 0);

  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = maxRequests * fraction;
    const at = y(value);
    parts.push(s("line", { class: fraction ? "grid" : "axis", x1: PAD.left, x2: W - PAD.right, y1: at, y2: at }));
    parts.push(s("text", { x: PAD.left - 6, y: at + 4, "text-anchor": "end" }, num(value)));
  }
  parts.push(s("text", { x: W - PAD.right + 6, y: PAD.top + 4 }, ms(maxLatency)));
  parts.push(s("text", { x: W - PAD.right + 6, y: PAD.top + innerH + 4 }, "0"));

  const points = [];
  buckets.forEach((bucket, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const good = Math.max(0, bucket.requests - bucket.errors);
    if (good) parts.push(s("rect", { class: "bar-ok", x, width: barW, y: y(good), height: y(0) - y(good) }));
    if (bucket.errors) {
      parts.push(s("rect", { class: "bar-bad", x, width: barW, y: y(bucket.requests), height: y(good) - y(bucket.requests) }));
    }
    if (latencies[i] !== null) points.push([PAD.left + i * slot + slot / 2, yLatency(latencies[i])]);
    const from = clockTime(bucket.start_ms, withDay, false);
    const to = clockTime(bucket.start_ms + bucketMs, withDay, false);
    const p95 = latencies[i] === null ? "" : `, p95 ${ms(latencies[i])}`;
    parts.push(s("rect", { class: "hit", x: PAD.left + i * slot, width: slot, y: PAD.top, height: innerH },
      s("title", null, `${from}–${to}: ${num(bucket.requests)} requests, ${num(bucket.errors)} errors${p95}`)));
  });
  if (points.length > 1) {
    parts.push(s("polyline", { class: "line", points: points.map((p) => p.join(",")).join(" ") }));
  } else if (points.length === 1) {
    parts.push(s("circle", { class: "dot", cx: points[0][0], cy: points[0][1], r: 3 }));
  }

  const ticks = Math.min(W < 560 ? 3 : 6, buckets.length);
  for (let t = 0; t < ticks; t++) {
    const i = Math.round((t * (buckets.length - 1)) / Math.max(1, ticks - 1));
    const x = PAD.left + i * slot + slot / 2;
    parts.push(s("text", { x, y: H - 6, "text-anchor": "middle" }, clockTime(buckets[i].start_ms, withDay, false)));
  }

  return s("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Requests over time: ${num(total)} requests, ${num(errors)} errors; p95 latency up to ${ms(maxLatency)}`,
  }, parts);
}
