// The revise view: pick a sample, paint the wrong reason on its heatmap, revise in the background, compare.
const rv = {info: null, index: 0, h: 0, w: 0, mask: null, flagged: null, job: null};
const $ = (id) => document.getElementById(id);

function drawMask() {
  const canvas = $('mask');
  canvas.width = rv.w; canvas.height = rv.h;
  const ctx = canvas.getContext('2d'), img = ctx.createImageData(rv.w, rv.h);
  let count = 0;
  for (let i = 0; i < rv.h * rv.w; i++) {
    if (rv.mask[i]) { count++; img.data[4 * i] = 20; img.data[4 * i + 1] = 20; img.data[4 * i + 2] = 20;
                      img.data[4 * i + 3] = 150; }
  }
  ctx.putImageData(img, 0, 0);
  $('mask-count').textContent = `${count} of ${rv.h * rv.w} cells painted`;
  $('mask-count').dataset.count = count;
}

function paintAt(event) {
  const box = $('mask').getBoundingClientRect();
  const col = Math.floor((event.clientX - box.left) / box.width * rv.w);
  const row = Math.floor((event.clientY - box.top) / box.height * rv.h);
  if (row < 0 || col < 0 || row >= rv.h || col >= rv.w) return;
  rv.mask[row * rv.w + col] = event.shiftKey ? 0 : 1;
  drawMask();
}

function maskRows() {
  const rows = [];
  for (let r = 0; r < rv.h; r++) rows.push(Array.from(rv.mask.slice(r * rv.w, (r + 1) * rv.w)));
  return rows;
}

async function pick(index) {
  xk.message('');
  rv.index = index;
  document.querySelectorAll('#samples canvas').forEach((c) => c.classList.toggle('selected',
                                                                                  Number(c.dataset.index) === index));
  const method = $('method').value || rv.info.defaults.method;
  try {
    const s = await xk.api(`/api/revise/sample/${index}?method=${encodeURIComponent(method)}`);
    $('sample-about').textContent = `#${s.index}: label ${s.label}, prediction ${s.prediction}`;
    const fresh = rv.h !== s.heatmap.h || rv.w !== s.heatmap.w;
    rv.h = s.heatmap.h; rv.w = s.heatmap.w;
    if (fresh || !rv.mask) rv.mask = new Uint8Array(rv.h * rv.w);
    xk.drawMap($('heatmap'), s.heatmap.values, rv.h, rv.w);
    drawMask();
    document.body.dataset.sample = index;
  } catch (e) { xk.message(e.message); }
}

function settings() {
  const out = {};
  for (const key of ['lam', 'method', 'epochs', 'lr']) if ($(key).value !== '') out[key] = $(key).value;
  if ($('strategy').value === 'p_clarc') out.layer = $('layer').value;
  return out;
}

function showResult(result) {
  const sets = Object.keys(result.accuracy);
  let html = '<table class="metrics" id="accuracy"><tr><th>accuracy</th><th>before</th><th>after</th></tr>';
  for (const name of sets) {
    const a = result.accuracy[name];
    html += `<tr data-set="${xk.esc(name)}" data-before="${a.before}" data-after="${a.after}">` +
      `<th>${xk.esc(name)}</th>` +
      `<td>${(100 * a.before).toFixed(1)} %</td><td>${(100 * a.after).toFixed(1)} %</td></tr>`;
  }
  html += '</table><div class="row" id="before-after"></div>' +
    `<p class="muted">saved in <code id="saved-folder">${xk.esc(result.folder)}</code>: ` +
    `${result.files.map(xk.esc).join(', ')} — <code>xaikit improve ${xk.esc(result.folder)}</code> repeats it</p>`;
  $('result').innerHTML = html; $('result').classList.remove('muted');
  const row = $('before-after');
  result.shown.forEach((index, i) => {
    for (const [label, maps] of [['before', result.before], ['after', result.after]]) {
      const card = document.createElement('div'); card.className = 'card';
      card.innerHTML = `<h4>#${index} ${label}</h4>`;
      const canvas = document.createElement('canvas'); card.appendChild(canvas);
      xk.drawMap(canvas, maps[i].values, maps[i].h, maps[i].w);
      row.appendChild(card);
    }
  });
}

async function start() {
  xk.message('');
  const strategy = $('strategy').value;
  const body = {strategy, settings: settings(), show: [rv.index]};
  if (strategy === 'rrr') body.mask = maskRows(); else body.artifact = rv.flagged || [];
  let answer;
  try { answer = await xk.post('/api/revise/start', body); } catch (e) { xk.message(e.message); return; }
  rv.job = answer.job; document.body.dataset.job = answer.job;
  $('start').disabled = true; $('cancel').disabled = false;
  const job = await xk.waitJob(answer.job, (j) => {
    $('progress').value = j.progress; $('status').textContent = `${j.status} ${j.message || ''}`;
  });
  $('start').disabled = false; $('cancel').disabled = true;
  $('status').dataset.status = job.status;
  if (job.status === 'done') showResult(job.result);
  else if (job.status === 'failed') xk.message(job.error);
  else xk.message(`revision ${job.status}; the model is unchanged`, 'info');
}

async function findClusters() {
  xk.message('');
  $('clusters').textContent = 'clustering…';
  try {
    const found = await xk.post('/api/revise/clusters', {label: Number($('cluster-class').value),
                                                         method: $('method').value});
    const box = $('clusters'); box.innerHTML = '';
    for (const c of found.clusters) {
      const card = document.createElement('div'); card.className = 'card cluster';
      card.innerHTML = `<h4>cluster ${c.cluster} <span class="muted">${c.size} samples</span></h4>`;
      const canvas = document.createElement('canvas'); card.appendChild(canvas);
      xk.drawMap(canvas, c.values, c.h, c.w);
      const flag = document.createElement('button');
      flag.className = 'plain flag'; flag.textContent = 'flag as artifact';
      flag.addEventListener('click', () => {
        rv.flagged = c.members; $('strategy').value = 'p_clarc';
        document.querySelectorAll('#clusters .card').forEach((k) => k.classList.remove('flagged'));
        card.classList.add('flagged'); xk.message(`cluster ${c.cluster} flagged (${c.size} samples)`, 'info');
      });
      card.appendChild(flag); box.appendChild(card);
    }
  } catch (e) { $('clusters').textContent = ''; xk.message(e.message); }
}

async function init() {
  try { rv.info = await xk.api('/api/revise/info'); } catch (e) { xk.message(e.message); return; }
  const d = rv.info.defaults;
  $('lam').value = d.lam; $('method').value = d.method; $('epochs').value = d.epochs; $('lr').value = d.lr;
  for (const name of rv.info.layers) { const o = document.createElement('option'); o.value = o.textContent = name;
                                       $('layer').appendChild(o); }
  for (const c of rv.info.classes) { const o = document.createElement('option'); o.value = o.textContent = c;
                                     $('cluster-class').appendChild(o); }
  $('data-about').textContent = `${rv.info.num_samples} samples ${JSON.stringify(rv.info.sample_shape)}; ` +
    `evaluated on: train, ${rv.info.evaluate.join(', ')}`;
  const items = (await xk.api('/api/revise/samples?limit=48')).items;
  for (const item of items) {
    const canvas = document.createElement('canvas');
    canvas.dataset.index = item.index; canvas.title = `label ${item.label}`;
    canvas.style.width = '40px'; canvas.style.height = '40px'; canvas.style.imageRendering = 'pixelated';
    canvas.style.cursor = 'pointer';
    xk.drawMap(canvas, item.values, item.h, item.w);
    canvas.addEventListener('click', () => pick(item.index));
    $('samples').appendChild(canvas);
  }
  let down = false;
  $('mask').addEventListener('mousedown', (e) => { down = true; paintAt(e); });
  $('mask').addEventListener('mousemove', (e) => { if (down) paintAt(e); });
  window.addEventListener('mouseup', () => { down = false; });
  $('clear-mask').addEventListener('click', () => { rv.mask.fill(0); drawMask(); });
  $('start').addEventListener('click', start);
  $('cancel').addEventListener('click', () => rv.job && xk.post(`/api/jobs/${rv.job}/cancel`, {}));
  $('find-clusters').addEventListener('click', findClusters);
  await pick(0);
  document.body.dataset.ready = '1';
}

init();
