// ganforge run report: sliders over the sample grids, the curves (drawn by uPlot), live reload.
// The data comes from the JSON block the page carries; nothing is fetched.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gf-data").textContent);
  var stateKey = "ganforge-report:" + location.pathname;
  var saved = {};
  try { saved = JSON.parse(sessionStorage.getItem(stateKey) || "{}"); } catch (e) { saved = {}; }

  function remember() {
    try { sessionStorage.setItem(stateKey, JSON.stringify(saved)); } catch (e) { /* private mode */ }
  }

  // ---- sliders: one picture (or a gallery) per position in training ----
  function showFrame(key, index) {
    var frames = data.sliders[key];
    var frame = frames[index];
    var box = document.getElementById(key + "-frame");
    box.textContent = "";
    frame.images.forEach(function (im) {
      var img = document.createElement("img");
      img.className = "grid";
      img.src = im.src;
      img.alt = im.alt;
      if (im.size) { img.width = im.size[0]; img.height = im.size[1]; }
      box.appendChild(img);
    });
    document.getElementById(key + "-cap").textContent = frame.label;
  }

  document.querySelectorAll("[data-slider]").forEach(function (fig) {
    var key = fig.getAttribute("data-slider");
    var range = document.getElementById(key + "-range");
    var last = data.sliders[key].length - 1;
    function go(i) {
      i = Math.max(0, Math.min(last, i));
      range.value = String(i);
      showFrame(key, i);
      saved[key] = i === last ? "last" : i;  // "last" follows new grids after a reload
      remember();
    }
    range.addEventListener("input", function () { go(parseInt(range.value, 10)); });
    fig.querySelectorAll("button[data-move]").forEach(function (b) {
      b.addEventListener("click", function () {
        go(parseInt(range.value, 10) + parseInt(b.getAttribute("data-move"), 10));
      });
    });
    if (typeof saved[key] === "number" && saved[key] < last) { go(saved[key]); }
  });

  // ---- charts ----
  function markerPlugin(spec) {
    var styles = data.markers;
    var several = spec.series.some(function (s) { return s.run !== spec.series[0].run; });
    function near(u, left) {
      return spec.markers.filter(function (m) {
        return Math.abs(u.valToPos(m.step, "x") - left) <= 6;
      });
    }
    return {
      hooks: {
        draw: [function (u) {
          var ctx = u.ctx, dpr = window.devicePixelRatio || 1;
          spec.markers.forEach(function (m) {
            var s = styles[m.type];
            var x = Math.round(u.valToPos(m.step, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) { return; }
            ctx.save();
            ctx.strokeStyle = s.color;
            ctx.lineWidth = (m.type === "collapse" ? 2 : 1.5) * dpr;
            ctx.setLineDash(s.dash.map(function (d) { return d * dpr; }));
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.restore();
          });
        }],
        setCursor: [function (u) {
          var out = document.getElementById("chart-" + spec.id + "-at");
          if (!out) { return; }
          var left = u.cursor.left;
          var hits = left == null || left < 0 ? [] : near(u, left);
          out.textContent = hits.map(function (m) {
            return "step " + m.step + ": " + styles[m.type].label + (m.text ? " (" + m.text + ")" : "") +
              (several ? " [" + m.run + "]" : "");
          }).slice(0, 4).join("; ");
        }]
      }
    };
  }

  function chartHeight() { return window.innerWidth < 600 ? 200 : 240; }

  data.charts.forEach(function (spec) {
    var el = document.getElementById("chart-" + spec.id);
    if (!el || typeof uPlot === "undefined") { return; }
    var y = spec.range ? { range: [spec.range[0] - 0.02, spec.range[1] + 0.02] } : {};
    var opts = {
      width: Math.max(200, el.clientWidth),
      height: chartHeight(),
      scales: { x: { time: false }, y: y },
      axes: [{ label: "step", size: 40 }, { size: 56 }],
      cursor: { sync: { key: "ganforge" }, points: { size: 7 } },
      legend: { live: true },
      series: [{ label: "step", value: function (u, v) { return v == null ? "—" : String(v); } }]
        .concat(spec.series.map(function (s) {
          return {
            label: s.label, stroke: s.color, dash: s.dash, width: 2, spanGaps: true,
            points: { show: spec.points, size: 6, fill: s.color },
            value: function (u, v) { return v == null ? "—" : (+v.toPrecision(4)).toString(); }
          };
        })),
      plugins: [markerPlugin(spec)]
    };
    var plot = new uPlot(opts, [spec.x].concat(spec.series.map(function (s) { return s.values; })), el);
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(function () {
        var w = Math.max(200, el.clientWidth);
        if (Math.abs(w - plot.width) > 2) { plot.setSize({ width: w, height: chartHeight() }); }
      }).observe(el);
    }
  });

  // Printing shows the curves' sentences too.
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  });

  // ---- a live run: reload to pick up new grids and log rows ----
  if (data.live) {
    setTimeout(function () { location.reload(); }, data.refresh * 1000);
  }
})();
