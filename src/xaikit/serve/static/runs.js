// The run explorer: filters, sort, a paginated gallery of heatmaps, the methods × metrics table, SpRAy clusters.
const runs = {info: null, offset: 0, limit: 24, total: 0, last: null};
const $ = (id) => document.getElementById(id);

function option(select, value, text) {
  const o = document.createElement('option'); o.value = value; o.textContent = text; select.appendChild(o);
}

function filters() {
  const f = {};
  if ($('f-label').value !== '') f.label = Number($('f-label').value);
  if ($('f-prediction').value !== '') f.prediction = Number($('f-prediction').value);
  if ($('f-correct').value !== '') f.correct = $('f-correct').value === 'true';
  if ($('f-failed').value !== '') f.failed = $('f-failed').value === 'true';
  const column = $('f-range-column').value;
  if (column) {
    const low = $('f-range-low').value, high = $('f-range-high').value;
    f.ranges = {[column]: [low === '' ? null : Number(low), high === '' ? null : Number(high)]};
  }
  return f;
}

function fmt(v) { return v === null || v === undefined ? '–' : (typeof v === 'number' ? +v.toPrecision(4) : v); }

async function loadPage() {
  const body = {filters: filters(), sort: $('sort').value, descending: $('descending').checked,
                offset: runs.offset, limit: runs.limit, method: $('map-method').value};
  const page = await xk.post('/api/runs/page', body);
  runs.total = page.total; runs.last = page;
  $('count').textContent = `${page.total} matching rows`;
  $('count').dataset.total = page.total;
  $('where').textContent = page.total ? `${page.offset + 1}–${page.offset + page.rows.length} of ${page.total}` : '';
  const maps = Object.fromEntries(page.maps.map((m) => [m.index, m]));
  const gallery = $('gallery'); gallery.innerHTML = '';
  const sort = page.sort;
  for (const row of page.rows) {
    const card = document.createElement('div');
    card.className = 'card run-card' + (row.ok ? '' : ' failed');
    card.dataset.index = row.index;
    card.dataset.sortValue = row[sort] === null ? '' : row[sort];
    const map = maps[row.index];
    card.innerHTML = `<h4>#${row.index} <span class="muted">${xk.esc(row.id)}</span></h4>`;
    if (map) {
      const canvas = document.createElement('canvas'); card.appendChild(canvas);
      xk.drawMap(canvas, map.values, map.h, map.w);
      const readout = document.createElement('div'); readout.className = 'readout'; card.appendChild(readout);
      xk.hover(canvas, map.values.map((v) => (v === null ? NaN : v)), map.h, map.w, readout);
    }
    const stats = document.createElement('div'); stats.className = 'stats';
    stats.innerHTML = `label ${fmt(row.label)} · prediction ${fmt(row.prediction)}` +
      (row.ok ? '' : `<br><span title="${xk.esc(row.error || '')}">failed</span>`) +
      (sort !== 'index' ? `<br>${xk.esc(sort)}: ${fmt(row[sort])}` : '');
    card.appendChild(stats);
    gallery.appendChild(card);
  }
  $('prev').disabled = runs.offset === 0;
  $('next').disabled = runs.offset + runs.limit >= runs.total;
}

async function loadTable() {
  const table = await xk.post('/api/runs/table', {filters: filters()});
  const cell = {};
  for (const c of table.cells) cell[`${c.method}|${c.metric}`] = c;
  let html = '<table class="metrics" id="mm-table"><tr><th>method</th>' +
    table.metrics.map((m) => `<th>${xk.esc(m)} ${table.higher_is_better[m] ? '↑' : '↓'}</th>`).join('') + '</tr>';
  for (const method of table.methods) {
    html += `<tr><th>${xk.esc(method)}</th>` + table.metrics.map((metric) => {
      const c = cell[`${method}|${metric}`];
      const text = c.mean === null ? '–' : `${fmt(c.mean)} ± ${fmt(c.sem)}`;
      return `<td data-method="${xk.esc(method)}" data-metric="${xk.esc(metric)}" data-mean="${c.mean}"` +
        `${c.best ? ' class="best"' : ''}>${c.best ? '<b>' + text + '</b>' : text}</td>`;
    }).join('') + '</tr>';
  }
  $('table').innerHTML = html + '</table>';
}

async function apply() {
  xk.message('');
  try { await Promise.all([loadPage(), runs.info.metrics.length ? loadTable() : Promise.resolve()]); }
  catch (e) { xk.message(e.message); }
}

async function cluster() {
  xk.message('');
  $('clusters').textContent = 'clustering…';
  try {
    const n = $('n-clusters').value;
    const found = await xk.post('/api/runs/clusters', {method: $('map-method').value, filters: filters(),
                                                       n_clusters: n === '' ? null : Number(n)});
    const box = $('clusters'); box.innerHTML = '';
    for (const c of found.clusters) {
      const card = document.createElement('div'); card.className = 'card cluster'; card.dataset.size = c.size;
      card.dataset.members = JSON.stringify(c.members);
      card.innerHTML = `<h4>cluster ${c.cluster} <span class="muted">${c.size} samples</span></h4>`;
      const canvas = document.createElement('canvas'); card.appendChild(canvas);
      xk.drawMap(canvas, c.mean, c.h, c.w);
      const list = document.createElement('div'); list.className = 'stats members';
      list.textContent = 'members: ' + c.members.slice(0, 40).join(', ') + (c.members.length > 40 ? ' …' : '');
      card.appendChild(list); box.appendChild(card);
    }
    if (found.sampled) box.insertAdjacentHTML('afterbegin', '<p class="muted">a spread-out subset was clustered</p>');
  } catch (e) { $('clusters').textContent = ''; xk.message(e.message); }
}

async function init() {
  try { runs.info = await xk.api('/api/runs/info'); }
  catch (e) { $('run-about').textContent = ''; xk.message(e.message); return; }
  const info = runs.info;
  $('run-about').textContent = `${info.folder}: ${info.rows} of ${info.num_samples} samples ` +
    `(${info.shards_done}/${info.num_shards} shards), model ${info.model}`;
  for (const c of info.classes) { option($('f-label'), c, c); option($('f-prediction'), c, c); }
  for (const s of info.sortable) option($('sort'), s, s);
  for (const s of info.score_columns.concat(['score'])) option($('f-range-column'), s, s);
  for (const m of info.map_methods) option($('map-method'), m, m);
  $('apply').addEventListener('click', () => { runs.offset = 0; apply(); });
  $('prev').addEventListener('click', () => { runs.offset = Math.max(0, runs.offset - runs.limit); loadPage(); });
  $('next').addEventListener('click', () => { runs.offset += runs.limit; loadPage(); });
  $('cluster').addEventListener('click', cluster);
  await apply();
  document.body.dataset.ready = '1';
}

init();
