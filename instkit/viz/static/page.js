
(function () {
  "use strict";
  var R = window.INSTKIT_REPORT;
  if (!R) { document.getElementById("load-error").hidden = false; return; }
  var PAGE = R.page_size || 60;
  var isEval = R.kind === "eval";
  var cats = {};
  R.categories.forEach(function (c) { cats[c.label] = c; });
  var state = { cls: "", crowd: "", finding: "", outcome: "", q: "", sort: "default", page: 0 };
  var shown = [];
  var byId = {};
  R.images.forEach(function (im, k) { byId[im.id] = im; im.order = k; });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "html") node.innerHTML = attrs[k];
      else if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined)
        node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && isNaN(v))) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en");
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  function boxText(v) {
    var r = v.map(function (x) { return Math.round(x); });
    return el("span", { text: r[0] + "," + r[1] + " " + r[2] + "×" + r[3], title: v.join(", ") });
  }
  function catName(label) { return cats[label] ? cats[label].name : "class " + label; }
  function swatch(color) { return el("span", { class: "swatch", style: "background:" + color }); }

  // --- overview ----------------------------------------------------------------------------
  function overview() {
    var root = document.getElementById("overview");
    document.getElementById("subtitle").textContent = R.subtitle || "";
    var cards = el("div", { class: "cards" });
    R.summary.forEach(function (kv) {
      cards.appendChild(el("div", { class: "card" }, [
        el("div", { class: "v", text: fmt(kv[1], 2) }), el("div", { class: "k", text: kv[0] })]));
    });
    root.appendChild(cards);
    if (R.notes && R.notes.length) {
      var ul = el("ul", { class: "note" });
      R.notes.forEach(function (n) { ul.appendChild(el("li", { text: n })); });
      root.appendChild(ul);
    }
    if (isEval) evalTables(root);
    var charts = el("div", { class: "charts" });
    R.charts.forEach(function (c) {
      charts.appendChild(el("div", { class: "chart" + (c.tall ? " tall" : ""), html: c.svg }));
    });
    root.appendChild(charts);
    if (R.dataset_findings && R.dataset_findings.length) {
      root.appendChild(el("h2", { text: "Findings not tied to one image" }));
      var groups = {};
      R.dataset_findings.forEach(function (f) { (groups[f.code] = groups[f.code] || []).push(f); });
      Object.keys(groups).sort().forEach(function (code) {
        var list = groups[code];
        root.appendChild(el("details", { class: "finding-group" }, [
          el("summary", { class: "sev-" + list[0].severity, text: code + " (" + list[0].severity + ") × " + list.length }),
          findingList(list)]));
      });
    }
  }

  function sortableTable(columns, rows, onRow) {
    var table = el("table");
    var tbody = el("tbody");
    var dir = {};
    var head = el("tr");
    columns.forEach(function (col, k) {
      var th = el("th", { class: (col.num ? "num " : "") + "sortable", text: col.title,
        title: "sort" });
      th.addEventListener("click", function () {
        dir[k] = !dir[k];
        rows.sort(function (a, b) {
          var x = a[col.key], y = b[col.key];
          if (x === null || x === undefined) x = -Infinity;
          if (y === null || y === undefined) y = -Infinity;
          return (x < y ? -1 : x > y ? 1 : 0) * (dir[k] ? -1 : 1);
        });
        fill();
      });
      head.appendChild(th);
    });
    function fill() {
      tbody.textContent = "";
      rows.forEach(function (row) {
        var tr = el("tr", { class: onRow ? "clickable" : "" });
        columns.forEach(function (col) {
          var td = el("td", { class: col.num ? "num" : "" });
          var v = row[col.key];
          if (col.render) td.appendChild(col.render(v, row));
          else td.textContent = col.raw ? (v === null || v === undefined ? "–" : String(v)) : fmt(v);
          tr.appendChild(td);
        });
        if (onRow) tr.addEventListener("click", function () { onRow(row, tr); });
        tbody.appendChild(tr);
      });
    }
    fill();
    table.appendChild(el("thead", null, [head]));
    table.appendChild(tbody);
    return table;
  }

  function apBar(v) {
    var span = el("span");
    if (v !== null && v !== undefined && !isNaN(v)) {
      span.appendChild(el("span", { class: "bar", style: "width:" + Math.round(v * 60) + "px" }));
    }
    span.appendChild(document.createTextNode(fmt(v)));
    return span;
  }

  function evalTables(root) {
    root.appendChild(el("h2", { text: "Per-class average precision" }));
    var cols = [
      { key: "name", title: "class", render: function (v, row) {
        return el("span", null, [swatch(row.color), v]); } },
      { key: "num_gt", title: "GT", num: true }, { key: "num_pred", title: "predictions", num: true },
      { key: "mask_ap50", title: "mask AP50", num: true, render: apBar },
      { key: "mask_ap", title: "mask AP", num: true, render: apBar },
      { key: "box_ap50", title: "box AP50", num: true, render: apBar },
      { key: "box_ap", title: "box AP", num: true, render: apBar },
      { key: "tp", title: "TP", num: true }, { key: "fp", title: "FP", num: true },
      { key: "fn", title: "FN", num: true }];
    var rows = R.per_class.slice();
    var wrap = el("div", { class: "table-wrap", id: "ap-table" });
    wrap.appendChild(sortableTable(cols, rows, function (row, tr) {
      var prev = wrap.querySelector("tr.hl");
      if (prev) prev.classList.remove("hl");
      tr.classList.add("hl");
      highlightCurve(row.name);
      var select = document.getElementById("f-class");
      select.value = String(row.label);
      select.dispatchEvent(new Event("change"));
    }));
    root.appendChild(wrap);
  }

  function highlightCurve(name) {
    document.querySelectorAll("polyline.curve").forEach(function (p) {
      p.classList.toggle("curve-hl", p.getAttribute("data-name") === name);
    });
  }

  function findingList(findings) {
    var ul = el("ul", { class: "findings" });
    findings.forEach(function (f) {
      ul.appendChild(el("li", { class: "sev-" + f.severity }, [
        el("b", { text: f.code }), " (" + f.severity + ") " + f.message + (f.where ? " — " + f.where : "")]));
    });
    return ul;
  }

  // --- filters and grid --------------------------------------------------------------------
  function select(id, label, options, key) {
    var s = el("select", { id: id });
    options.forEach(function (o) { s.appendChild(el("option", { value: o[0], text: o[1] })); });
    s.addEventListener("change", function () { state[key] = s.value; state.page = 0; render(); });
    return el("label", null, [label, s]);
  }

  function filters() {
    var box = document.getElementById("filters");
    var classes = R.categories.filter(function (c) { return c.images > 0; })
      .sort(function (a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; })
      .map(function (c) { return [String(c.label), c.name + " (" + c.images + ")"]; });
    box.appendChild(select("f-class", "class", [["", "all classes"]].concat(classes), "cls"));
    if (isEval) {
      box.appendChild(select("f-outcome", "outcome", [["", "any"], ["errors", "with errors"],
        ["fp", "with false positives"], ["fn", "with missed objects"], ["clean", "no errors"]], "outcome"));
    } else {
      box.appendChild(select("f-crowd", "crowd", [["", "any"], ["yes", "with crowd regions"],
        ["no", "without crowd regions"]], "crowd"));
      var codes = (R.finding_codes || []).map(function (f) {
        return [f.code, f.code + " (" + f.images + ")"]; });
      box.appendChild(select("f-finding", "finding", [["", "any"], ["__any", "with findings"],
        ["__none", "without findings"]].concat(codes), "finding"));
    }
    var sorts = isEval
      ? [["default", "most errors first"], ["fp", "most false positives"], ["fn", "most missed"],
         ["file", "file name"]]
      : [["default", "file order"], ["n", "most instances"], ["findings", "most findings"],
         ["file", "file name"]];
    box.appendChild(select("f-sort", "sort", sorts, "sort"));
    var q = el("input", { id: "f-search", type: "search", placeholder: "file name or id" });
    q.addEventListener("input", function () { state.q = q.value.trim().toLowerCase(); state.page = 0; render(); });
    box.appendChild(el("label", null, ["search", q]));
    box.appendChild(el("span", { id: "count" }));
  }

  function keep(im) {
    if (state.cls !== "" && im.labels.indexOf(+state.cls) < 0) return false;
    if (state.crowd === "yes" && !im.crowd) return false;
    if (state.crowd === "no" && im.crowd) return false;
    if (state.finding === "__any" && !im.nf) return false;
    if (state.finding === "__none" && im.nf) return false;
    if (state.finding && state.finding.slice(0, 2) !== "__" && im.codes.indexOf(state.finding) < 0) return false;
    if (state.outcome === "errors" && !(im.fp + im.fn)) return false;
    if (state.outcome === "fp" && !im.fp) return false;
    if (state.outcome === "fn" && !im.fn) return false;
    if (state.outcome === "clean" && (im.fp + im.fn)) return false;
    if (state.q && (im.file || "").toLowerCase().indexOf(state.q) < 0 && String(im.id).indexOf(state.q) < 0) return false;
    return true;
  }

  function order(list) {
    var by = {
      n: function (a, b) { return b.n - a.n; },
      findings: function (a, b) { return b.nf - a.nf; },
      fp: function (a, b) { return b.fp - a.fp; },
      fn: function (a, b) { return b.fn - a.fn; },
      file: function (a, b) { return (a.file || "") < (b.file || "") ? -1 : (a.file || "") > (b.file || "") ? 1 : 0; }
    }[state.sort];
    return by ? list.sort(function (a, b) { return by(a, b) || a.order - b.order; }) : list;
  }

  function card(im) {
    var badges = [el("span", { class: "badge", text: im.n + " inst" })];
    if (isEval) {
      badges.push(el("span", { class: "badge tp", text: "TP " + im.tp }));
      if (im.fp) badges.push(el("span", { class: "badge fp", text: "FP " + im.fp }));
      if (im.fn) badges.push(el("span", { class: "badge fn", text: "FN " + im.fn }));
    } else {
      if (im.crowd) badges.push(el("span", { class: "badge crowd", text: "crowd " + im.crowd }));
      if (im.nf) badges.push(el("span", { class: "badge " + im.worst, text: im.nf + " finding" + (im.nf > 1 ? "s" : "") }));
    }
    return el("a", { class: "thumb", href: "#image=" + im.id, "data-id": String(im.id),
      title: im.file || String(im.id) }, [
      el("div", { class: "pic" }, [el("img", { src: im.thumb, loading: "lazy", alt: im.file || "",
        width: String(im.tw), height: String(im.th) })]),
      el("div", { class: "cap" }, [el("span", { class: "name", text: im.file || ("image " + im.id) })].concat(badges))]);
  }

  function render() {
    shown = order(R.images.filter(keep));
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var grid = document.getElementById("grid");
    grid.textContent = "";
    var slice = shown.slice(state.page * PAGE, (state.page + 1) * PAGE);
    if (!slice.length) grid.appendChild(el("div", { class: "empty", text: "No image matches these filters." }));
    var frag = document.createDocumentFragment();
    slice.forEach(function (im) { frag.appendChild(card(im)); });
    grid.appendChild(frag);
    document.getElementById("count").textContent = shown.length + " of " + R.images.length + " images";
    pager(pages);
  }

  function pager(pages) {
    var nav = document.getElementById("pager");
    nav.textContent = "";
    if (pages <= 1) return;
    function button(text, page, current) {
      var b = el("button", { type: "button", text: text });
      if (current) b.setAttribute("aria-current", "page");
      if (page < 0 || page >= pages) b.disabled = true;
      b.addEventListener("click", function () { state.page = page; render(); window.scrollTo(0, document.getElementById("images").offsetTop); });
      return b;
    }
    nav.appendChild(button("‹ prev", state.page - 1));
    var seen = -1;
    for (var p = 0; p < pages; p++) {
      if (p < 2 || p > pages - 3 || Math.abs(p - state.page) < 3) {
        if (p > seen + 1) nav.appendChild(el("span", { text: "…" }));
        nav.appendChild(button(String(p + 1), p, p === state.page));
        seen = p;
      }
    }
    nav.appendChild(button("next ›", state.page + 1));
  }

  // --- detail view -------------------------------------------------------------------------
  var current = null;
  function openDetail(id) {
    var im = byId[id];
    if (!im) { closeDetail(); return; }
    current = im;
    var box = document.getElementById("detail");
    document.getElementById("d-title").textContent = (im.file || "image") + " — image_id " + im.id + " — " + im.w + "×" + im.h;
    var img = document.getElementById("d-img");
    img.src = im.full;
    img.alt = im.file || "";
    var info = document.getElementById("d-info");
    info.textContent = "";
    if (im.error) info.appendChild(el("p", { class: "sev-error", text: im.error }));
    if (im.notes && im.notes.length) info.appendChild(el("p", { class: "note", text: im.notes.join("; ") }));
    if (isEval) evalDetail(info, im); else datasetDetail(info, im);
    box.hidden = false;
    document.getElementById("d-close").focus();
  }

  function instanceFindings(list) {
    if (!list || !list.length) return el("span", { text: "" });
    var span = el("span");
    list.forEach(function (f) {
      span.appendChild(el("span", { class: "badge " + f.severity, title: f.message, text: f.code }));
      span.appendChild(document.createTextNode(" "));
    });
    return span;
  }

  function datasetDetail(info, im) {
    if (im.findings && im.findings.length) {
      info.appendChild(el("h4", { text: "Findings on this image" }));
      info.appendChild(findingList(im.findings));
    }
    info.appendChild(el("h4", { text: im.inst.length + " instances" }));
    var cols = [
      { key: "id", title: "ann id", raw: true },
      { key: "label", title: "class", render: function (v, row) { return el("span", null, [swatch(row.color), catName(v) + (row.crowd ? " (crowd)" : "")]); } },
      { key: "box", title: "box x,y w×h", render: boxText },
      { key: "area", title: "area px", num: true },
      { key: "coco_area", title: "file area", num: true },
      { key: "fill", title: "box fill", num: true, render: function (v) { return el("span", { text: fmt(v, 2) }); } },
      { key: "mask", title: "mask" },
      { key: "findings", title: "findings", render: instanceFindings }];
    var wrap = el("div", { class: "table-wrap" });
    var table = sortableTable(cols, im.inst.slice(), null);
    table.id = "d-instances";
    table.querySelectorAll("tbody tr").forEach(function (tr) { tr.classList.add("inst-row"); });
    wrap.appendChild(table);
    info.appendChild(wrap);
  }

  function evalDetail(info, im) {
    info.appendChild(el("p", null, [el("span", { class: "badge tp", text: "TP " + im.tp }), " ",
      el("span", { class: "badge fp", text: "FP " + im.fp }), " ", el("span", { class: "badge fn", text: "FN " + im.fn }),
      " at IoU " + R.iou_threshold + ", score ≥ " + R.score_threshold]));
    info.appendChild(el("h4", { text: im.preds.length + " predictions" }));
    var pcols = [
      { key: "score", title: "score", num: true, render: function (v) { return el("span", { text: fmt(v, 3) }); } },
      { key: "label", title: "class", render: function (v) { return el("span", { text: catName(v) }); } },
      { key: "outcome", title: "outcome", render: function (v) { return el("span", { class: "badge " + v, text: v.toUpperCase() }); } },
      { key: "iou", title: "IoU", num: true, render: function (v) { return el("span", { text: fmt(v, 2) }); } },
      { key: "gt", title: "matched GT id", raw: true },
      { key: "box", title: "box x,y w×h", render: boxText }];
    var w1 = el("div", { class: "table-wrap" });
    var t1 = sortableTable(pcols, im.preds.slice(), null);
    t1.id = "d-preds";
    t1.querySelectorAll("tbody tr").forEach(function (tr) { tr.classList.add("inst-row"); });
    w1.appendChild(t1);
    info.appendChild(w1);
    info.appendChild(el("h4", { text: im.gts.length + " ground-truth instances" }));
    var gcols = [
      { key: "id", title: "ann id", raw: true },
      { key: "label", title: "class", render: function (v) { return el("span", { text: catName(v) }); } },
      { key: "outcome", title: "outcome", render: function (v) { return el("span", { class: "badge " + (v === "missed" ? "fn" : v === "found" ? "tp" : "info"), text: v }); } },
      { key: "area", title: "area px", num: true },
      { key: "box", title: "box x,y w×h", render: boxText }];
    var w2 = el("div", { class: "table-wrap" });
    w2.appendChild(sortableTable(gcols, im.gts.slice(), null));
    info.appendChild(w2);
  }

  function closeDetail() {
    current = null;
    document.getElementById("detail").hidden = true;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  function step(delta) {
    if (!current) return;
    var k = shown.indexOf(current);
    if (k < 0) return;
    var next = shown[k + delta];
    if (next) location.hash = "image=" + next.id;
  }

  function route() {
    var m = /^#image=(-?\d+)$/.exec(location.hash);
    if (m) openDetail(+m[1]); else if (current) closeDetail();
  }

  document.getElementById("d-close").addEventListener("click", closeDetail);
  document.getElementById("d-prev").addEventListener("click", function () { step(-1); });
  document.getElementById("d-next").addEventListener("click", function () { step(1); });
  document.getElementById("detail").addEventListener("click", function (e) { if (e.target.id === "detail") closeDetail(); });
  document.addEventListener("keydown", function (e) {
    if (!current) return;
    if (e.key === "Escape") closeDetail();
    else if (e.key === "ArrowLeft") step(-1);
    else if (e.key === "ArrowRight") step(1);
  });
  window.addEventListener("hashchange", route);

  overview();
  filters();
  render();
  route();
  document.body.setAttribute("data-ready", "1");
})();
