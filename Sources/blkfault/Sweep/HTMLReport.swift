import Foundation

/// A single self-contained page: summary, a heatmap (events × occurrence, one square per fault
/// variant, coloured by outcome) and, for the case clicked (or named by #case=ID), its rule
/// file, the target's output and the check's output. The page draws itself from the embedded
/// JSON, so what a browser shows is what the data says.
enum HTMLReport {
    static func page(_ results: [CaseResult], manifest: SweepManifest) throws -> String {
        let data = try Reports.json(results, manifest: manifest)
        // Inside <script>, "</" could end the element early.
        let json = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "</", with: "<\\/")
        let colours = Outcome.allCases.map { "\"\($0.rawValue)\":\"\(colour($0))\"" }.joined(separator: ",")
        let order = Outcome.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ",")
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>blkfault sweep</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
            h1 { font-size: 1.4em; margin: 0 0 .3em; }
            code, pre { font: 12px/1.35 ui-monospace, monospace; }
            pre { background: #f6f6f6; border: 1px solid #ddd; padding: .6em; overflow: auto; max-height: 24em; white-space: pre-wrap; }
            #heatmap { border-collapse: collapse; margin: 1em 0; }
            #heatmap th { font-weight: normal; font-size: 12px; padding: 2px 6px; text-align: right; }
            #heatmap thead th { text-align: center; }
            #heatmap td { padding: 2px; border: 1px solid #eee; }
            #heatmap td.point { cursor: pointer; }
            #heatmap td.point:hover { outline: 2px solid #333; }
            .sq { display: inline-block; width: 12px; height: 16px; margin: 0 1px; border-radius: 2px; }
            .legend span { display: inline-block; margin-right: 1em; }
            .case { border: 1px solid #ccc; border-radius: 4px; padding: .5em 1em; margin: .8em 0; }
            .case h3 { margin: .2em 0; font-size: 1.05em; }
            .badge { padding: 1px 6px; border-radius: 3px; color: #fff; font-size: 12px; }
            .meta { color: #555; }
            </style></head>
            <body>
            <h1>blkfault sweep</h1>
            <p class="meta" id="command"></p>
            <p id="counts"></p>
            <p class="legend" id="legend"></p>
            <table id="heatmap"><thead></thead><tbody></tbody></table>
            <p class="meta">Rows: events (in the order the traced run raised them). Columns: the how-manieth raise of the event. One square per fault variant (<span id="variants"></span>). Click a cell for its cases.</p>
            <div id="details"><p class="meta">No case selected.</p></div>
            <script id="sweep-data" type="application/json">\(json)</script>
            <script>
            (function () {
              var data = JSON.parse(document.getElementById('sweep-data').textContent);
              var colours = {\(colours)};
              var order = [\(order)];
              var m = data.manifest;
              function el(tag, attrs, text) {
                var e = document.createElement(tag);
                for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
                if (text !== undefined) e.textContent = text;
                return e;
              }
              document.getElementById('command').textContent =
                'Command: ' + m.command.join(' ') + (m.setup ? '   Setup: ' + m.setup : '') +
                '   Check: ' + (m.check || 'qemu-img check on each matched image');
              var counts = document.getElementById('counts');
              counts.appendChild(el('b', {}, data.cases.length + ' cases: '));
              order.forEach(function (o) {
                if (data.counts[o]) counts.appendChild(el('span', {}, o + ' ' + data.counts[o] + '   '));
              });
              var legend = document.getElementById('legend');
              order.forEach(function (o) {
                var s = el('span'); var sq = el('span', {'class': 'sq'}); sq.style.background = colours[o];
                s.appendChild(sq); s.appendChild(document.createTextNode(' ' + o)); legend.appendChild(s);
              });
              var events = [], byPoint = {}, maxOcc = 0, variants = [];
              data.cases.forEach(function (c) {
                if (events.indexOf(c.event) < 0) events.push(c.event);
                if (variants.indexOf(c.fault) < 0) variants.push(c.fault);
                var k = c.event + '#' + c.occurrence;
                (byPoint[k] = byPoint[k] || []).push(c);
                if (c.occurrence > maxOcc) maxOcc = c.occurrence;
              });
              document.getElementById('variants').textContent = variants.join('; ');
              var head = el('tr'); head.appendChild(el('th', {}, 'event'));
              for (var n = 1; n <= maxOcc; n++) head.appendChild(el('th', {}, String(n)));
              document.querySelector('#heatmap thead').appendChild(head);
              var body = document.querySelector('#heatmap tbody');
              events.forEach(function (e) {
                var tr = el('tr'); tr.appendChild(el('th', {}, e));
                for (var n = 1; n <= maxOcc; n++) {
                  var cs = byPoint[e + '#' + n];
                  if (!cs) { tr.appendChild(el('td')); continue; }
                  var td = el('td', {'class': 'point', 'data-point': e + '#' + n});
                  variants.forEach(function (v) {
                    var c = cs.filter(function (x) { return x.fault === v; })[0];
                    var sq = el('span', {'class': 'sq', 'title': c ? c.id + ': ' + c.outcome : v + ': not run'});
                    sq.style.background = c ? colours[c.outcome] : '#fff';
                    td.appendChild(sq);
                  });
                  td.addEventListener('click', (function (cs) { return function () { show(cs); }; })(cs));
                  tr.appendChild(td);
                }
                body.appendChild(tr);
              });
              function show(cs) {
                var d = document.getElementById('details');
                d.innerHTML = '';
                cs.forEach(function (c) {
                  var box = el('div', {'class': 'case', 'id': 'case-' + c.id});
                  var h = el('h3', {}, c.id + ' ');
                  var b = el('span', {'class': 'badge'}, c.outcome); b.style.background = colours[c.outcome];
                  h.appendChild(b); box.appendChild(h);
                  box.appendChild(el('p', {'class': 'meta'}, c.fault + ' at raise ' + c.occurrence + ' of ' + c.event +
                    (c.inferred ? ' (inferred event)' : '') + ' · target: ' + c.target + ' · check: ' + c.check +
                    ' · rule acted on ' + c.actions + ' operation(s)'));
                  if (c.reproCommand) box.appendChild(el('p', {}, 'Repro: ' + c.repro + '/repro.sh — ' + c.reproCommand));
                  box.appendChild(el('h4', {}, 'Rule file'));
                  box.appendChild(el('pre', {'class': 'rules'}, c.rules));
                  box.appendChild(el('h4', {}, 'Target output'));
                  box.appendChild(el('pre', {'class': 'target-output'}, c.targetOutput || '(none)'));
                  box.appendChild(el('h4', {}, 'Check output'));
                  box.appendChild(el('pre', {'class': 'check-output'}, c.checkOutput || '(none)'));
                  d.appendChild(box);
                });
              }
              // #case=ID selects a case; otherwise the worst one is shown.
              var want = (location.hash.match(/case=([^&]+)/) || [])[1];
              var pick = data.cases.filter(function (c) { return c.id === decodeURIComponent(want || ''); })[0];
              if (!pick) pick = data.cases.slice().sort(function (a, b) {
                return order.indexOf(a.outcome) - order.indexOf(b.outcome);
              })[0];
              if (pick) show(byPoint[pick.event + '#' + pick.occurrence]);
            })();
            </script>
            </body></html>

            """
    }

    static func colour(_ o: Outcome) -> String {
        switch o {
        case .corruption: return "#d62728"
        case .crashed: return "#8e44ad"
        case .hung: return "#34495e"
        case .checkFailed: return "#e67e22"
        case .leaks: return "#f1c40f"
        case .errorReportedClean: return "#7fbf7f"
        case .clean: return "#2e9e44"
        case .notReached: return "#cccccc"
        }
    }
}
