// Shared helpers of every view: JSON calls that show the server's message, heatmap drawing, jobs.
const xk = {
  message(text, kind) {
    const box = document.getElementById('message');
    if (!text) { box.hidden = true; return; }
    box.textContent = text; box.className = kind || ''; box.hidden = false;
  },
  // fetch JSON; a refused request throws an Error carrying the server's message and status
  async api(url, options) {
    const response = await fetch(url, options);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
      error.status = response.status; throw error;
    }
    return body;
  },
  post(url, data) {
    return xk.api(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(data)});
  },
  // a diverging colour for v in [-1, 1]: blue (negative), white, red (positive)
  colour(v) {
    const t = Math.max(-1, Math.min(1, v));
    if (t >= 0) return [255, Math.round(255 * (1 - t)), Math.round(255 * (1 - t))];
    return [Math.round(255 * (1 + t)), Math.round(255 * (1 + t)), 255];
  },
  // draw a (h, w) map (row-major array) on a canvas, scaled by `scale` (max |value|)
  drawMap(canvas, values, h, w, scale) {
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext('2d'), img = ctx.createImageData(w, h);
    const s = scale || Math.max(1e-30, ...values.map(Math.abs));
    for (let i = 0; i < h * w; i++) {
      const [r, g, b] = xk.colour(values[i] / s);
      img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  },
  // show the value under the cursor of a drawn map in `readout`
  hover(canvas, values, h, w, readout) {
    canvas.addEventListener('mousemove', (event) => {
      const box = canvas.getBoundingClientRect();
      const col = Math.min(w - 1, Math.floor((event.clientX - box.left) / box.width * w));
      const row = Math.min(h - 1, Math.floor((event.clientY - box.top) / box.height * h));
      readout.textContent = `(${row}, ${col}): ${values[row * w + col].toPrecision(4)}`;
      canvas.dataset.hoverValue = values[row * w + col];
    });
  },
  // poll a background job until it ends; onProgress(job) on every poll
  async waitJob(id, onProgress, interval) {
    for (;;) {
      const job = await xk.api(`/api/jobs/${id}`);
      if (onProgress) onProgress(job);
      if (!['queued', 'running'].includes(job.status)) return job;
      await new Promise((r) => setTimeout(r, interval || 300));
    }
  },
  esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;',
                                                       "'": '&#39;'}[c]));
  },
};
// decode a map the server sent (float32, base64) and draw it on a new canvas in `box`, with the value under the
// cursor in `readout`; returns the canvas
xk.showMap = function (box, answer, readout) {
  const bytes = Uint8Array.from(atob(answer.map), (c) => c.charCodeAt(0));
  const values = Array.from(new Float32Array(bytes.buffer));
  const canvas = document.createElement('canvas');
  box.appendChild(canvas);
  xk.drawMap(canvas, values, answer.h, answer.w, answer.scale);
  if (readout) xk.hover(canvas, values, answer.h, answer.w, readout);
  canvas.dataset.checksum = answer.checksum; canvas.dataset.sum = answer.map_sum;
  return canvas;
};
// start a job route, wait for it with a progress bar in `box`, return its result (throws on failure)
xk.runJob = async function (url, body, box) {
  const started = await xk.post(url, body);
  box.innerHTML = '<progress max="1" value="0"></progress> <span class="muted"></span> ' +
    '<button class="plain">cancel</button>';
  box.querySelector('button').onclick = () => xk.post(`/api/jobs/${started.job}/cancel`, {});
  const job = await xk.waitJob(started.job, (j) => {
    box.querySelector('progress').value = j.progress; box.querySelector('span').textContent = j.message;
  });
  box.innerHTML = '';
  if (job.status !== 'done') throw new Error(job.error || `the job was ${job.status}`);
  return job.result;
};
// the input the explain view picked, kept across views in this tab
xk.currentInput = function () {
  try { return JSON.parse(sessionStorage.getItem('xaikit-input')); } catch (e) { return null; }
};
