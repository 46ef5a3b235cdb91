/* The Host Exposure tab's charts, drawn with the D3 Horizon loads
 * (xstatic-d3, version 3): per compute host a bar of what is allocated with
 * the headroom to the maximum stacked on it, and a line at its capacity;
 * hosts a full burst would take over capacity are highlighted. The numbers
 * come from the JSON the template embeds; the table below the charts shows
 * the same numbers to everyone, charts or not. */
(function () {
  'use strict';

  var MARGIN = {top: 28, right: 16, bottom: 40, left: 64};
  var HEIGHT = 240;

  function readData(container) {
    var script = document.getElementById(container.attr('data-data-id'));
    if (!script) {
      return [];
    }
    return JSON.parse(script.textContent);
  }

  function draw(element, hosts, dimension, labels) {
    var chart = d3.select(element);
    chart.selectAll('*').remove();
    var rows = hosts.filter(function (host) { return host[dimension]; });
    if (!rows.length) {
      return;
    }
    var width = Math.max(element.clientWidth || 0, 320) -
      MARGIN.left - MARGIN.right;
    var top = d3.max(rows, function (host) {
      var numbers = host[dimension];
      return Math.max(numbers.allocated + numbers.headroom, numbers.capacity);
    }) || 1;
    var x = d3.scale.ordinal()
      .domain(rows.map(function (host) { return host.host; }))
      .rangeRoundBands([0, width], 0.3);
    var y = d3.scale.linear().domain([0, top * 1.1]).range([HEIGHT, 0]);

    var svg = chart.append('svg')
      .attr('width', width + MARGIN.left + MARGIN.right)
      .attr('height', HEIGHT + MARGIN.top + MARGIN.bottom)
      .append('g')
      .attr('transform', 'translate(' + MARGIN.left + ',' + MARGIN.top + ')');
    svg.append('text')
      .attr('class', 'xloud-exposure-title')
      .attr('x', 0).attr('y', -12)
      .text(labels[dimension]);
    svg.append('g')
      .attr('class', 'xloud-exposure-axis')
      .attr('transform', 'translate(0,' + HEIGHT + ')')
      .call(d3.svg.axis().scale(x).orient('bottom'));
    svg.append('g')
      .attr('class', 'xloud-exposure-axis')
      .call(d3.svg.axis().scale(y).orient('left').ticks(5));

    var bars = svg.selectAll('.xloud-exposure-host')
      .data(rows)
      .enter().append('g')
      .attr('class', function (host) {
        return 'xloud-exposure-host' +
          (host[dimension].over_capacity ? ' xloud-exposure-over' : '');
      })
      .attr('data-host', function (host) { return host.host; })
      .attr('transform', function (host) {
        return 'translate(' + x(host.host) + ',0)';
      });
    bars.append('rect')
      .attr('class', 'xloud-exposure-allocated')
      .attr('width', x.rangeBand())
      .attr('y', function (host) { return y(host[dimension].allocated); })
      .attr('height', function (host) {
        return HEIGHT - y(host[dimension].allocated);
      })
      .append('title')
      .text(function (host) {
        return labels.allocated + ': ' + host[dimension].allocated;
      });
    bars.append('rect')
      .attr('class', 'xloud-exposure-headroom')
      .attr('width', x.rangeBand())
      .attr('y', function (host) {
        var numbers = host[dimension];
        return y(numbers.allocated + numbers.headroom);
      })
      .attr('height', function (host) {
        var numbers = host[dimension];
        return y(numbers.allocated) - y(numbers.allocated + numbers.headroom);
      })
      .append('title')
      .text(function (host) {
        return labels.headroom + ': ' + host[dimension].headroom;
      });
    bars.append('line')
      .attr('class', 'xloud-exposure-capacity')
      .attr('x1', -4).attr('x2', x.rangeBand() + 4)
      .attr('y1', function (host) { return y(host[dimension].capacity); })
      .attr('y2', function (host) { return y(host[dimension].capacity); })
      .append('title')
      .text(function (host) {
        return labels.capacity + ': ' + host[dimension].capacity;
      });
    bars.filter(function (host) { return host[dimension].over_capacity; })
      .append('text')
      .attr('class', 'xloud-exposure-over-label')
      .attr('x', x.rangeBand() / 2)
      .attr('y', function (host) {
        var numbers = host[dimension];
        return y(Math.max(numbers.allocated + numbers.headroom,
                          numbers.capacity)) - 4;
      })
      .attr('text-anchor', 'middle')
      .text('\u26a0')
      .append('title')
      .text(labels.over);
  }

  function drawAll(root) {
    $(root).find('.xloud-exposure-charts').each(function () {
      var container = $(this);
      var hosts = readData(container);
      var labels = {
        allocated: container.attr('data-label-allocated'),
        headroom: container.attr('data-label-headroom'),
        capacity: container.attr('data-label-capacity'),
        over: container.attr('data-label-over'),
        vcpus: container.attr('data-title-vcpus'),
        memory_mb: container.attr('data-title-memory')
      };
      container.find('.xloud-exposure-chart').each(function () {
        draw(this, hosts, $(this).attr('data-dimension'), labels);
      });
      container.attr('data-drawn', 'true');
    });
  }

  horizon.addInitFunction(function () { drawAll(document); });
  horizon.tabs.addTabLoadFunction(drawAll);
  // Horizon fires a resize when a tab holding a .d3-container is shown:
  // a chart drawn while hidden had no width.
  $(window).on('resize', function () { drawAll(document); });
}());
