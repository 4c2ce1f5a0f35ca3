/* Maps of the console: ECharts `geo` over the county outlines shipped in static/geo (no tiles,
   no map API), with points (sites, depots), route lines and marked points. No inline script is
   needed, so the Content-Security-Policy stays script-src 'self'.

   Markup, drawn on DOMContentLoaded and after every htmx swap:
     <div class="map" id="plan-map" data-map="<anything>"
          data-geo="<url of a GeoJSON FeatureCollection, e.g. static_url('geo/henan.json')>"
          data-source="<id of a <script type="application/json"> block>"></div>
   The block holds {"points": [Point, ...], "kinds": {"school": "学校", ...}} where a Point is
   {name, kind, lng, lat, org?, url?}: WGS-84 as stored, the same frame as the outlines. Points
   are drawn one series per kind (the legend toggles kinds); a point with a url opens it on click.

   API, for pages that draw more (the caravan plan):
     ikepuMap.ready(elementOrId) -> Promise<MapView>  resolves once the outlines are drawn (a
                                      map not laid out yet waits until it has a size)
     view.setPoints(points, kinds?)   replace the points (as in the block)
     view.addRoute({id, name, color, coords: [[lng, lat], ...], width?, legend?, tip?})
                                      one coloured polyline, e.g. a caravan-day's route
     view.addMarks({id, name, color, symbol?, size?, legend?,
                    points: [{name, lng, lat, note?}]})
                                      marked points, e.g. unassigned requests with their reason
     view.remove(id)                  remove that route or set of marks
     view.clearRoutes()               remove every route and mark
     view.fit()                       zoom onto the points when they cover little of the outline
     view.seriesIds()                 what is drawn: "points:<kind>", "route:<id>", "marks:<id>"
     view.chart                       the ECharts instance (its getOption().series keeps a null
                                      where a series was removed)
   Every addRoute and addMarks is one series; `legend: true` lists it in the legend (the point
   kinds always are); `tip` is the route's tooltip text (its name otherwise). Ids are the
   caller's; adding an id again replaces it. */
(function () {
  "use strict";

  var FONT = '"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif';
  var KIND_STYLE = {
    school: { color: "#1f6feb", symbol: "circle" },
    village: { color: "#2da44e", symbol: "circle" },
    community: { color: "#f08c00", symbol: "circle" },
    base: { color: "#8250df", symbol: "diamond" },
    depot: { color: "#cf222e", symbol: "rect" },
    other: { color: "#6e7781", symbol: "circle" }
  };
  var SPARE_COLORS = ["#0a7ea4", "#bf3989", "#9a6700", "#57606a"];

  var outlines = {}; // url -> Promise of {name, bounds}
  var views = {}; // element id -> Promise of MapView

  function esc(text) {
    return window.echarts.format.encodeHTML(text == null ? "" : String(text));
  }

  function boundsOf(coords, bounds) {
    if (typeof coords[0] === "number") {
      bounds[0] = Math.min(bounds[0], coords[0]);
      bounds[1] = Math.min(bounds[1], coords[1]);
      bounds[2] = Math.max(bounds[2], coords[0]);
      bounds[3] = Math.max(bounds[3], coords[1]);
    } else {
      coords.forEach(function (c) { boundsOf(c, bounds); });
    }
    return bounds;
  }

  function hasSize(el) {
    return el.clientWidth > 0 && el.clientHeight > 0;
  }

  // Resolves once the element is laid out with a size, the first moment a chart can start.
  function sized(el) {
    return new Promise(function (resolve) {
      if (hasSize(el)) {
        resolve();
        return;
      }
      var observer = new ResizeObserver(function () {
        if (hasSize(el)) {
          observer.disconnect();
          resolve();
        }
      });
      observer.observe(el);
    });
  }

  function loadOutlines(url) {
    if (!outlines[url]) {
      outlines[url] = fetch(url, { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("map outlines " + url + ": HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (geojson) {
          var name = "outlines:" + url;
          window.echarts.registerMap(name, geojson);
          var bounds = [Infinity, Infinity, -Infinity, -Infinity];
          geojson.features.forEach(function (f) { boundsOf(f.geometry.coordinates, bounds); });
          return { name: name, bounds: bounds };
        });
    }
    return outlines[url];
  }

  function tooltip(params) {
    var d = params.data || {};
    if (params.componentType === "geo") {
      return esc(params.name);
    }
    if (params.seriesType === "lines") {
      return esc(d.tip || d.name);
    }
    var lines = ["<strong>" + esc(d.name) + "</strong>", esc(d.kindLabel || params.seriesName)];
    if (d.org) {
      lines.push(esc(d.org));
    }
    if (d.note) {
      lines.push(esc(d.note));
    }
    return lines.join("<br>");
  }

  function MapView(el, outline) {
    this.el = el;
    this.outline = outline;
    this.points = [];
    this.pointSeries = [];
    this.overlays = [];
    this.chart = window.echarts.init(el, null, { renderer: "canvas" });
    var b = outline.bounds;
    this.chart.setOption({
      textStyle: { fontFamily: FONT },
      tooltip: { trigger: "item", formatter: tooltip, confine: true },
      legend: {
        orient: "vertical", left: 8, top: 8, data: [],
        backgroundColor: "rgba(255, 255, 255, 0.85)", padding: 8
      },
      geo: {
        map: outline.name,
        roam: true,
        scaleLimit: { min: 0.8, max: 24 },
        // A degree of longitude is shorter than one of latitude by cos(latitude).
        aspectScale: Math.cos(((b[1] + b[3]) / 2) * Math.PI / 180),
        layoutCenter: ["50%", "50%"],
        layoutSize: "96%",
        itemStyle: { areaColor: "#f4f7fb", borderColor: "#9fb1c7", borderWidth: 0.6 },
        emphasis: {
          itemStyle: { areaColor: "#e3ecf8" },
          label: { show: true, color: "#1f2328", fontSize: 12 }
        },
        select: { disabled: true },
        tooltip: { show: true }
      },
      series: []
    });
    var chart = this.chart;
    chart.on("click", function (params) {
      if (params.data && params.data.url) {
        window.location.assign(params.data.url);
      }
    });
    // Follow the element, not the window, and never at no size: ECharts 6.1.0 throws on every
    // frame of a geo chart resized to no height or width (apache/echarts#21706), as a folded
    // card or an element swapped out of the page would be. It keeps its last size meanwhile.
    var pending = false;
    new ResizeObserver(function () {
      if (pending) {
        return;
      }
      pending = true;
      requestAnimationFrame(function () {
        pending = false;
        if (hasSize(el) && (el.clientWidth !== chart.getWidth() || el.clientHeight !== chart.getHeight())) {
          chart.resize();
        }
      });
    }).observe(el);
  }

  MapView.prototype.setPoints = function (points, kinds) {
    kinds = kinds || {};
    var byKind = {};
    var order = [];
    points.forEach(function (p) {
      if (!byKind[p.kind]) {
        byKind[p.kind] = [];
        order.push(p.kind);
      }
      byKind[p.kind].push({
        name: p.name, value: [p.lng, p.lat], kindLabel: kinds[p.kind] || p.kind,
        org: p.org, url: p.url
      });
    });
    var known = Object.keys(KIND_STYLE);
    order.sort(function (a, b) { return known.indexOf(a) - known.indexOf(b); });
    this.points = points;
    this.pointSeries = order.map(function (kind, i) {
      var style = KIND_STYLE[kind] || { color: SPARE_COLORS[i % SPARE_COLORS.length], symbol: "circle" };
      return {
        id: "points:" + kind,
        name: kinds[kind] || kind,
        type: "scatter",
        coordinateSystem: "geo",
        geoIndex: 0,
        data: byKind[kind],
        symbol: style.symbol,
        symbolSize: kind === "depot" ? 11 : 8,
        itemStyle: { color: style.color, borderColor: "#fff", borderWidth: 1, opacity: 0.9 },
        emphasis: { scale: 1.6 },
        cursor: "pointer",
        z: 4
      };
    });
    this.render();
  };

  MapView.prototype.addRoute = function (route) {
    this.put({
      id: "route:" + route.id,
      name: route.name,
      type: "lines",
      coordinateSystem: "geo",
      geoIndex: 0,
      polyline: true,
      data: [{ name: route.name, tip: route.tip, coords: route.coords }],
      lineStyle: { color: route.color, width: route.width || 2.5, opacity: 0.9, cap: "round", join: "round" },
      emphasis: { lineStyle: { width: (route.width || 2.5) + 2 } },
      z: 3
    }, route.legend);
  };

  MapView.prototype.addMarks = function (marks) {
    this.put({
      id: "marks:" + marks.id,
      name: marks.name,
      type: "scatter",
      coordinateSystem: "geo",
      geoIndex: 0,
      data: marks.points.map(function (p) {
        return { name: p.name, value: [p.lng, p.lat], note: p.note, kindLabel: marks.name };
      }),
      symbol: marks.symbol || "pin",
      symbolSize: marks.size || 18,
      itemStyle: { color: marks.color },
      z: 5
    }, marks.legend);
  };

  MapView.prototype.put = function (series, legend) {
    this.overlays = this.overlays.filter(function (s) { return s.id !== series.id; });
    series.inLegend = !!legend;
    this.overlays.push(series);
    this.render();
  };

  MapView.prototype.remove = function (id) {
    this.overlays = this.overlays.filter(function (s) {
      return s.id !== "route:" + id && s.id !== "marks:" + id;
    });
    this.render();
  };

  MapView.prototype.clearRoutes = function () {
    this.overlays = [];
    this.render();
  };

  MapView.prototype.seriesIds = function () {
    return this.pointSeries.concat(this.overlays).map(function (s) { return s.id; });
  };

  MapView.prototype.render = function () {
    var legend = this.pointSeries.map(function (s) { return s.name; });
    this.overlays.forEach(function (s) {
      if (s.inLegend) {
        legend.push(s.name);
      }
    });
    var counts = {};
    this.pointSeries.forEach(function (s) { counts[s.name] = s.data.length; });
    this.chart.setOption({
      legend: {
        data: legend,
        show: legend.length > 0,
        formatter: function (name) { return counts[name] != null ? name + "（" + counts[name] + "）" : name; }
      },
      series: this.pointSeries.concat(this.overlays)
    }, { replaceMerge: ["series"] });
  };

  MapView.prototype.fit = function () {
    if (!this.points.length) {
      return;
    }
    var p = boundsOf(this.points.map(function (x) { return [x.lng, x.lat]; }),
      [Infinity, Infinity, -Infinity, -Infinity]);
    var o = this.outline.bounds;
    // Zoom so the points' box fills about 70 % of the view; a third of the outline or more
    // stays the whole-outline view, so the map keeps its context.
    var zoom = 0.7 * Math.min((o[2] - o[0]) / Math.max(p[2] - p[0], 0.05),
      (o[3] - o[1]) / Math.max(p[3] - p[1], 0.05));
    if (zoom < 2) {
      return;
    }
    this.chart.setOption({
      geo: { center: [(p[0] + p[2]) / 2, (p[1] + p[3]) / 2], zoom: Math.min(zoom, 12) }
    });
  };

  function mount(el) {
    if (!window.echarts || !el.id) {
      return null;
    }
    if (!views[el.id] || views[el.id].el !== el) {
      var promise = Promise.all([loadOutlines(el.dataset.geo), sized(el)]).then(function (ready) {
        var view = new MapView(el, ready[0]);
        var source = el.dataset.source && document.getElementById(el.dataset.source);
        if (source) {
          var data = JSON.parse(source.textContent);
          view.setPoints(data.points || [], data.kinds);
          view.fit();
        }
        el.dataset.drawn = "1";
        return view;
      });
      promise.el = el;
      views[el.id] = promise;
    }
    return views[el.id];
  }

  function drawAll(root) {
    root.querySelectorAll("[data-map][data-geo]").forEach(mount);
  }

  window.ikepuMap = {
    ready: function (target) {
      var el = typeof target === "string" ? document.getElementById(target) : target;
      return (el && mount(el)) || Promise.reject(new Error("no map element " + target));
    }
  };

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
})();
