// Two small canvas charts for the console, drawn by hand: no library to vendor.
// Each is paired on the page with a text summary, which is what a screen reader reads.

function setup(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 220;
  if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "12px system-ui, sans-serif";
  return { ctx, width, height };
}

function axis(ctx, left, top, right, bottom, max) {
  ctx.strokeStyle = "#d5d7de";
  ctx.fillStyle = "#4a4d57";
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = bottom - (bottom - top) * f;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(right, y);
    ctx.stroke();
    ctx.fillText(String(Math.round(max * f)), 4, y + 4);
  }
}

const niceMax = (value) => {
  if (value <= 5) return 5;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
};

/** Stacked bars, one per entry of `rows` ([{key: n}]), in `keys` order and colours. */
export function bars(canvas, rows, keys, colours) {
  const { ctx, width, height } = setup(canvas);
  const left = 40, top = 10, right = width - 8, bottom = height - 20;
  const totals = rows.map((row) => keys.reduce((sum, key) => sum + (row[key] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  axis(ctx, left, top, right, bottom, max);
  const slot = (right - left) / Math.max(rows.length, 1);
  rows.forEach((row, i) => {
    let y = bottom;
    for (const key of keys) {
      const n = row[key] || 0;
      if (!n) continue;
      const size = ((bottom - top) * n) / max;
      ctx.fillStyle = colours[key];
      ctx.fillRect(left + i * slot + 1, y - size, Math.max(slot - 2, 1), size);
      y -= size;
    }
  });
  ctx.fillStyle = "#4a4d57";
  ctx.fillText(`${rows.length} s ago`, left, height - 4);
  ctx.fillText("now", right - 24, height - 4);
}

/** Lines over time, one per key of `keys`, from `points` ([{key: n}]). */
export function lines(canvas, points, keys, colours) {
  const { ctx, width, height } = setup(canvas);
  const left = 40, top = 10, right = width - 8, bottom = height - 20;
  let max = 0;
  for (const point of points) for (const key of keys) max = Math.max(max, point[key] || 0);
  max = niceMax(max);
  axis(ctx, left, top, right, bottom, max);
  const step = (right - left) / Math.max(points.length - 1, 1);
  for (const key of keys) {
    if (!points.some((p) => p[key] != null)) continue;
    ctx.strokeStyle = colours[key];
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach((p, i) => {
      const y = bottom - ((bottom - top) * (p[key] || 0)) / max;
      if (i === 0) ctx.moveTo(left, y);
      else ctx.lineTo(left + i * step, y);
    });
    ctx.stroke();
  }
}
