package runpage

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
)

// The page is written by hand rather than by html/template: executing a
// template calls methods by reflection, and a binary that can do that
// keeps every exported method of every type it links (the AWS SDK's
// included), which took ingest, finalize and refresh from 11 to 19 MB.
// Every value goes through f, which escapes it; none is placed but in text
// or a double-quoted attribute, where that escaping is all html/template
// would do. TestHostileReportIsEscaped and the golden pages hold it.

//go:embed page.css
var css string

// escaper escapes as html/template does in text and quoted attributes.
var escaper = strings.NewReplacer("\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;")

// writer is a page being written: markup as given, values escaped.
type writer struct{ b bytes.Buffer }

// f writes the markup format with each value (a %v) escaped; numbers are
// formatted as fmt's %v formats them.
func (h *writer) f(format string, values ...any) {
	for i, v := range values {
		values[i] = escaper.Replace(fmt.Sprint(v))
	}
	fmt.Fprintf(&h.b, format, values...)
}

// markup writes s as it is.
func (h *writer) markup(s string) { h.b.WriteString(s) }

func write(v view) []byte {
	var h writer
	h.f(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>%v: %v · segpilot run %v</title>
<style>
`, v.Export, v.Title, v.RunID)
	h.markup(css)
	h.f(`</style>
</head>
<body>
<main>
<header>
<p class="kicker">segpilot run report</p>
<h1 id="export">%v</h1>
<p class="run">run <code id="run-id">%v</code></p>
</header>

<p class="status status-%v" id="outcome"><strong id="status">%v</strong> · <span id="headline">%v</span></p>
`, v.Export, v.RunID, v.Status, v.Title, v.Headline)
	if v.Message != "" {
		h.f(`<p class="message" id="message">%v</p>`, v.Message)
	}
	h.markup("\n")
	if v.Error != "" {
		h.f(`<details id="error"><summary>Technical details</summary><pre>%v</pre></details>`, v.Error)
	}
	h.markup("\n\n")
	if b := v.Brake; b != nil {
		h.f(`
<section id="brake">
<h2>Safety brake</h2>
<p>This mirror run was held before anything was sent: it <span id="brake-figures">%v</span>, above the export's limit, <span id="brake-limit">%v</span>.</p>
<p>If the change is intended, this lifts the brake for this run of the file:</p>
<pre id="brake-command"><code>%v</code></pre>
<p class="small">To lift it for good, set <code>allowLargeRemoval: true</code> under <code>exports.%v</code>.</p>
</section>
`, b.Figures, b.Limit, b.Command, b.Export)
	}
	h.markup(`

<section id="facts">
<h2>Run</h2>
<dl class="facts">`)
	for _, f := range v.Facts {
		h.f("\n<dt>%v</dt><dd>%v</dd>", f.Label, f.Value)
	}
	h.markup("\n</dl>\n</section>\n\n")
	if c := v.Funnel; c != nil {
		h.f(`
<section id="funnel">
<h2>Where the rows went</h2>
<svg class="chart" width="%v" height="%v" viewBox="0 0 %v %v" role="img" aria-label="row funnel">`, c.Width, c.Height, c.Width, c.Height)
		for _, g := range c.Groups {
			h.f(`
<text class="group" x="0" y="%v">%v</text>`, g.Y, g.Label)
		}
		h.bars(c, true)
		h.markup("\n</svg>\n</section>\n")
	}
	h.markup("\n\n")
	if c := v.Requests; c != nil {
		h.requests(c)
	}
	h.markup("\n\n")
	if v.RequestLine != "" {
		h.markup("\n<section id=\"totals\">")
		if v.Requests == nil {
			h.markup("<h2>Requests</h2>")
		}
		h.f(`
<p id="request-line">%v`, v.RequestLine)
		if v.ByStatus != "" {
			h.f("; by HTTP status: %v", v.ByStatus)
		}
		h.markup("</p>\n</section>\n")
	}
	h.markup("\n\n")
	if c := v.Duration; c != nil {
		h.f(`
<section id="duration">
<h2>Duration against the rate-limit floor</h2>
<svg class="chart" width="%v" height="%v" viewBox="0 0 %v %v" role="img" aria-label="duration against the rate-limit floor">`, c.Width, c.Height, c.Width, c.Height)
		h.bars(c, false)
		h.f(`
</svg>
<p class="caption" id="duration-line">%v</p>
</section>
`, v.DurationLine)
	}
	h.markup("\n\n")
	if r := v.Rejections; r != nil {
		h.rejections(r)
	}
	h.markup("\n\n<footer>\n<p>Rendered by segpilot from this run's report.json, which holds every figure on this page. Row numbers are data rows (1 = the first after the header).")
	if !v.EmailsShown {
		h.markup(" Emails are masked, as in the logs; an export shows them with <code>showEmails: true</code>.")
	}
	h.markup("</p>\n</footer>\n</main>\n</body>\n</html>\n")
	return h.b.Bytes()
}

// bars writes a bar chart's bars, with their notes when notes.
func (h *writer) bars(c *chart, notes bool) {
	for _, b := range c.Bars {
		h.f(`
<g class="bar %v"><text x="%v" y="%v" text-anchor="end">%v</text><rect x="%v" y="%v" width="%v" height="16"></rect><text x="%v" y="%v"><tspan class="value" data-figure="%v">%v</tspan>`,
			b.Class, c.LabelX, b.TextY, b.Label, c.BarX, b.RectY, b.W, b.ValueX, b.TextY, b.Key, b.Value)
		if notes && b.Note != "" {
			h.f(`<tspan class="note"> · %v</tspan>`, b.Note)
		}
		h.markup("</text></g>")
	}
}

func (h *writer) requests(c *timelineChart) {
	h.f(`
<section id="requests">
<h2>Requests over time</h2>
<svg class="chart" width="%v" height="%v" viewBox="0 0 %v %v" role="img" aria-label="requests per second over time against the budget">`, c.Width, c.Height, c.Width, c.Height)
	for _, g := range c.Grid {
		h.f(`
<line class="grid" x1="%v" y1="%v" x2="%v" y2="%v"></line><text class="axis" x="%v" y="%v" text-anchor="end">%v</text>`,
			g.X1, g.Y1, g.X2, g.Y2, g.Label.X, g.Label.Y, g.Label.Text)
	}
	for _, l := range c.XLabels {
		h.f(`
<text class="axis" x="%v" y="%v" text-anchor="%v">%v</text>`, l.X, l.Y, l.Anchor, l.Text)
	}
	for _, b := range c.Bars {
		h.f(`
<rect class="slot" x="%v" y="%v" width="%v" height="%v"><title>%v</title></rect>`, b.X, b.Y, b.W, b.H, b.Title)
	}
	if b := c.Budget; b != nil {
		h.f(`
<line class="budget" x1="%v" y1="%v" x2="%v" y2="%v"></line><text class="budget-label" id="budget" x="%v" y="%v" text-anchor="end">%v</text>`,
			b.X1, b.Y1, b.X2, b.Y2, b.Label.X, b.Label.Y, b.Label.Text)
	}
	for _, m := range c.Throttled {
		h.f(`
<g class="m429"><title>%v</title><polygon points="%v"></polygon><text x="%v" y="%v" text-anchor="middle">%v</text></g>`, m.Title, m.Points, m.X, m.Y, m.Count)
	}
	for _, m := range c.Retries {
		h.f(`
<g class="retry"><title>%v</title><circle cx="%v" cy="%v" r="4"></circle><text x="%v" y="%v" dy="-7" text-anchor="middle">%v</text></g>`, m.Title, m.X, m.Y, m.X, m.Y, m.Count)
	}
	h.f(`
</svg>
<p class="legend"><span><i class="sw sw-slot"></i>batch requests per second</span><span><i class="sw sw-budget"></i>the connection's budget</span><span class="sw-429">▼ answered 429</span><span class="sw-retry">● retries</span></p>
<p class="caption" id="requests-caption">%v</p>
</section>
`, c.Caption)
}

func (h *writer) rejections(r *rejections) {
	h.markup("\n<section id=\"rejections\">\n<h2>Rows not delivered</h2>")
	if len(r.Rows) == 0 {
		h.markup("\n<p>Every row was delivered or left unchanged: <a href=\"rejected.csv\" id=\"rejected-csv\">rejected.csv</a> lists none.</p>")
	} else {
		h.f(`
<p>%v not delivered, with the reason. %v in <a href="rejected.csv" id="rejected-csv">rejected.csv</a>`, r.Which, r.Where)
		if !r.EmailsShown {
			h.markup(" (emails are masked here; the CSV has them)")
		}
		h.markup(".</p>\n<table>\n<thead><tr><th>row</th><th>email</th><th>reason</th></tr></thead>\n<tbody>")
		for _, row := range r.Rows {
			h.f(`
<tr><td class="row">%v</td><td class="email">%v</td><td>%v</td></tr>`, row.Row, row.Email, row.Reason)
		}
		h.markup("\n</tbody>\n</table>")
	}
	h.markup("\n</section>\n")
}
