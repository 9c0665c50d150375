// Package runpage renders a run's report.json as report.html: one
// self-contained page (inline CSS and SVG, no scripts, nothing fetched)
// that can be opened from S3 or attached to a ticket. It is pure: a
// report in, HTML out; every figure on the page comes from the report.
package runpage

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/segment"
)

// Render returns the page of rep. It cannot fail; its error is there for
// run.Service's Page.
func Render(rep *run.Report) ([]byte, error) {
	return write(newView(rep)), nil
}

// view is what the page shows, every value derived from the report.
type view struct {
	Export, RunID, Status, Title, Headline, Message string
	Error                                           string // the technical cause, folded away
	Facts                                           []fact
	Funnel                                          *chart
	Requests                                        *timelineChart
	RequestLine                                     string
	ByStatus                                        string
	Duration                                        *chart
	DurationLine                                    string
	Rejections                                      *rejections
	Brake                                           *brake
	EmailsShown                                     bool
}

type fact struct{ Label, Value string }

// chart is a horizontal bar chart; coordinates are SVG user units.
type chart struct {
	Width, Height int
	Groups        []group
	Bars          []bar
	LabelX, BarX  int
}

type group struct {
	Label string
	Y     int
}

type bar struct {
	Key, Label, Value, Note, Class string
	RectY, TextY, W, ValueX        int
}

type timelineChart struct {
	Width, Height      int
	Bars               []slotBar
	Grid               []line
	XLabels            []label
	Budget             *line
	Throttled, Retries []mark
	Caption            string
}

type slotBar struct {
	X, Y, W, H float64
	Title      string
}

type line struct {
	X1, Y1, X2, Y2 float64
	Label          label
}

type label struct {
	X, Y         float64
	Text, Anchor string
}

// mark flags 429s (a triangle) or retries (a circle) above a slot.
type mark struct {
	X, Y   float64
	Points string // the triangle's
	Count  string
	Title  string
}

type rejections struct {
	Rows []rejectedRow
	// Which rows the table shows, and where the rest are: "All 3 rows
	// that were" (not delivered) … "Every one is" (in rejected.csv).
	Which, Where string
	EmailsShown  bool
}

type rejectedRow struct{ Row, Email, Reason string }

type brake struct {
	Figures, Limit, Command, Export string
}

// The statuses the page knows how to say; anything else is shown as is.
var titles = map[string]string{
	run.StatusSucceeded:  "Succeeded",
	run.StatusFailed:     "Failed",
	run.StatusHeld:       "Held",
	run.StatusRefused:    "Refused",
	run.StatusInvalid:    "Invalid",
	run.StatusSuperseded: "Superseded",
	run.StatusRunning:    "Running",
}

func newView(rep *run.Report) view {
	v := view{Export: rep.Export, RunID: rep.RunID, Status: rep.Status, EmailsShown: rep.EmailsShown,
		Message: maskUnlessShown(rep, rep.Message), Error: maskUnlessShown(rep, rep.Error)}
	v.Title = titles[rep.Status]
	if v.Title == "" {
		v.Title = rep.Status
	}
	finalized := rep.Rejected != "" // finalize ran: the outcome counts are the run's
	v.Headline = headline(rep, finalized)
	v.Facts = facts(rep)
	if rep.Plan.Rows > 0 || rep.Plan.Previous > 0 {
		v.Funnel = funnel(rep, finalized)
	}
	if finalized {
		v.Requests = requestsChart(rep)
		v.RequestLine = fmt.Sprintf("%s (%s answered 429, %s)", plural(rep.Requests.Total, "request", "requests"),
			num(rep.Requests.Throttled), plural(rep.Requests.Retries, "retry", "retries"))
		v.ByStatus = byStatus(rep.Requests.ByStatus)
		v.Duration, v.DurationLine = durationChart(rep)
		v.Rejections = rejected(rep)
	}
	if rep.Status == run.StatusHeld && rep.Brake != nil {
		v.Brake = brakeOf(rep)
	}
	return v
}

// skippedNote says why contacts were skipped, and what finding out cost.
func skippedNote(rep *run.Report) string {
	destination := cmp.Or(rep.Destination, "Autopilot")
	why := "not in " + destination + " (mode: update)"
	switch {
	case rep.Undo != nil:
		why = "no longer in " + destination + " (an undo creates nobody)"
	case rep.Mode == "create":
		why = "already in " + destination + " (mode: create)"
	}
	if n := rep.Requests.Lookup; n > 0 {
		why += "; " + plural(n, "request", "requests") + " listed its contacts"
	}
	return why
}

func headline(rep *run.Report, finalized bool) string {
	o := rep.Outcome
	switch {
	case finalized:
		s := fmt.Sprintf("%s sent · %s rejected · %s failed · %s removed · took %s",
			num(o.Sent), num(o.Rejected+o.RejectedByAPI), num(o.Failed), num(o.Removed), Seconds(rep.DurationSeconds))
		if rep.FloorSeconds > 0 {
			s += " (rate-limit floor " + Seconds(rep.FloorSeconds) + ")"
		}
		return s
	case rep.Status == run.StatusHeld:
		return fmt.Sprintf("nothing sent: the mirror safety brake holds %s of %s",
			plural(rep.Plan.Removed, "removal", "removals"), plural(rep.Plan.Previous, "contact", "contacts"))
	}
	return "nothing sent"
}

// modeOf is the run's mode, and whether it was a full resync.
func modeOf(rep *run.Report) string {
	if rep.Undo != nil {
		return "undo of run " + rep.Undo.Of + ": its additions taken off, its removals put back, its field changes reversed; nobody created"
	}
	if rep.FullResync && rep.Mode != "" {
		return rep.Mode + ", full resync: every contact of the file sent, unchanged ones too"
	}
	return rep.Mode
}

func facts(rep *run.Report) []fact {
	src := rep.Source.Key
	if rep.Source.Size > 0 {
		src += " (" + bytesize(rep.Source.Size) + ")"
	}
	source := []fact{{"Source file", src}, {"ETag", rep.Source.ETag}}
	if rep.Undo != nil && rep.Undo.Of != "" {
		// An undo reads no file: what it works from is the run it reverses.
		source = []fact{{"Undoes", "run " + rep.Undo.Of}}
	}
	out := []fact{
		{"Export", rep.Export},
		{"List", rep.List},
		{"Mode", modeOf(rep)},
		{"Trigger", rep.Trigger},
	}
	out = append(out, source...)
	out = append(out, []fact{
		{"Config version", rep.ConfigVersion},
		{"Run", rep.RunID},
		{"Planned", when(rep.PlannedAt)},
		{"Started", when(rep.StartedAt)},
		{"Finished", when(rep.FinishedAt)},
	}...)
	if rep.Attempt > 0 {
		// The attempt's number is the export's (its execution is named by
		// it); a person counts the attempts of this file.
		a := fmt.Sprintf("%d of this file, execution %s-%d", rep.Prior+1, rep.RunID, rep.Attempt)
		if rep.Prior > 0 {
			they := "they"
			if rep.Prior == 1 {
				they = "it"
			}
			a += fmt.Sprintf(" (after %s of this file: its plan holds what %s did not deliver)", plural(rep.Prior, "earlier attempt", "earlier attempts"), they)
		}
		out = append(out, fact{"Attempt", a})
	}
	if sp := rep.Split; sp != nil {
		f := fmt.Sprintf("group %s of %s, %s of the segment: %s", sp.Group, sp.Parent, sp.Percent, sp.Shares)
		if n := rep.Plan.OtherGroups; n > 0 {
			f += fmt.Sprintf("; %s of this file are other groups' or held out", plural(n, "contact", "contacts"))
		}
		if n := rep.Plan.MovedOut; n > 0 {
			f += fmt.Sprintf("; %s moved to another group, taken off this list", num(n))
		}
		if sp.LastChange != "" {
			f += "; " + sp.LastChange
		}
		out = append(out, fact{"Split", f})
	}
	if u := rep.Undo; u != nil && u.CSV != "" {
		c := u.Counts
		r := fmt.Sprintf("take off the list %s · put back %s · restore fields %s", num(c.TakeOff), num(c.PutBack), num(c.Restore))
		if c.Partial > 0 {
			r += fmt.Sprintf(" (%s of them but a field that was empty: an upsert cannot empty one)", num(c.Partial))
		}
		r += fmt.Sprintf(" · not restorable %s; contact by contact in %s", num(c.NotRestorable), u.CSV)
		out = append(out, fact{"Reversed", r})
	}
	if b := rep.Batches; b.Total > 0 {
		out = append(out, fact{"Batches", fmt.Sprintf("%s settled, %s failed, of %s", num(b.Settled), num(b.Failed), num(b.Total))})
	}
	if rep.Attempt > 0 {
		promoted := "no: nothing was sent"
		switch {
		case rep.SnapshotPromoted && rep.Status == run.StatusSucceeded:
			promoted = "yes: the next run diffs against what this one delivered"
		case rep.SnapshotPromoted:
			promoted = "yes, row by row: what was delivered at its new state, the rest at its old, so the next run sends exactly what this one did not deliver"
		}
		out = append(out, fact{"Snapshot promoted", promoted})
	}
	kept := out[:0]
	for _, f := range out {
		if f.Value != "" {
			kept = append(kept, f)
		}
	}
	return kept
}

// Funnel geometry: label column, bar area, value text.
const (
	funnelWidth  = 720
	funnelLabelW = 170
	funnelBarW   = 340
	rowH         = 24
	groupH       = 26
)

func funnel(rep *run.Report, finalized bool) *chart {
	p, o := rep.Plan, rep.Outcome
	type item struct {
		label       string
		value       int
		note, class string
	}
	type section struct {
		label string
		items []item
	}
	sections := []section{
		{"The file", []item{
			{"rows", p.Rows, "", "in"},
			{"valid", p.Valid, fmt.Sprintf("%s rejected", num(p.Rejected)), "in"},
			{"unique", p.Unique, plural(p.Duplicates, "duplicate", "duplicates"), "in"},
		}},
		{"Against the list", []item{
			{"added", p.Added, "", "plan"},
			{"changed", p.Changed, "", "plan"},
			{"unchanged", p.Unchanged, "not sent again", "plan"},
			{"removed", p.Removed, fmt.Sprintf("of %s before", num(p.Previous)), "plan"},
		}},
	}
	if finalized {
		// Reports from before there were other destinations name none.
		destination := cmp.Or(rep.Destination, "Autopilot")
		out := []item{
			{"sent", o.Sent, "", "ok"},
			{"rejected by " + destination, o.RejectedByAPI, "", "warn"},
			{"failed", o.Failed, "", "bad"},
			{"taken off the list", o.Removed, "", "ok"},
		}
		if o.RemoveFailed > 0 {
			out = append(out, item{"removal failed", o.RemoveFailed, "", "bad"})
		}
		if o.Skipped > 0 {
			out = append(out, item{"skipped", o.Skipped, skippedNote(rep), "warn"})
		}
		sections = append(sections, section{"Sent to " + destination, out})
	}
	top := 1
	for _, s := range sections {
		for _, it := range s.items {
			top = max(top, it.value)
		}
	}
	c := &chart{Width: funnelWidth, LabelX: funnelLabelW - 10, BarX: funnelLabelW}
	y := 0
	for _, s := range sections {
		c.Groups = append(c.Groups, group{Label: s.label, Y: y + 18})
		y += groupH
		for _, it := range s.items {
			c.Bars = append(c.Bars, newBar(strings.ReplaceAll(it.label, " ", "-"), it.label, num(it.value), it.note, it.class,
				y, float64(it.value)/float64(top)))
			y += rowH
		}
	}
	c.Height = y + 4
	return c
}

// newBar places one bar of a chart at row top y, share of the bar area long.
func newBar(key, label, value, note, class string, y int, share float64) bar {
	w := int(math.Round(share * funnelBarW))
	if share > 0 {
		w = max(w, 2)
	}
	return bar{Key: key, Label: label, Value: value, Note: note, Class: class,
		RectY: y + 4, TextY: y + 17, W: w, ValueX: funnelLabelW + w + 8}
}

// Timeline geometry.
const (
	tlWidth, tlHeight = 720, 240
	tlLeft, tlTop     = 56, 24
	tlRight, tlBottom = 16, 40
)

func requestsChart(rep *run.Report) *timelineChart {
	tl := rep.Timeline
	if tl == nil || len(tl.Slots) == 0 || tl.SlotSeconds <= 0 {
		return nil
	}
	c := &timelineChart{Width: tlWidth, Height: tlHeight}
	left, right := float64(tlLeft), float64(tlWidth-tlRight)
	top, bottom := float64(tlTop), float64(tlHeight-tlBottom)
	var peak, sum float64
	var throttled, retries int
	for _, s := range tl.Slots {
		peak = max(peak, s.Requests/tl.SlotSeconds)
		sum += s.Requests
		throttled += s.Throttled
		retries += s.Retries
	}
	yMax := niceCeil(max(peak, rep.RequestsPerSecond) * 1.15)
	yOf := func(rate float64) float64 { return round1(bottom - (bottom-top)*rate/yMax) }
	span := float64(len(tl.Slots)) * tl.SlotSeconds
	slotW := (right - left) / float64(len(tl.Slots))
	for i, s := range tl.Slots {
		rate := s.Requests / tl.SlotSeconds
		x, y := left+float64(i)*slotW, yOf(rate)
		from, to := Seconds(float64(i)*tl.SlotSeconds), Seconds(float64(i+1)*tl.SlotSeconds)
		c.Bars = append(c.Bars, slotBar{X: round1(x + slotW*0.1), Y: y, W: round1(slotW * 0.8), H: round1(bottom - y),
			Title: fmt.Sprintf("%s–%s: %s (%s/s)", from, to, requests(s.Requests), trim(rate))})
		mx := round1(x + slotW/2)
		if s.Throttled > 0 {
			my := y - 4
			c.Throttled = append(c.Throttled, mark{X: mx, Y: round1(my - 12), Count: num(s.Throttled),
				Points: fmt.Sprintf("%v,%v %v,%v %v,%v", round1(mx-5), round1(my-9), round1(mx+5), round1(my-9), mx, round1(my)),
				Title:  fmt.Sprintf("%s answered 429 (batches ending %s–%s)", num(s.Throttled), from, to)})
		}
		if s.Retries > 0 {
			my := y - 4
			if s.Throttled > 0 {
				my -= 28
			}
			c.Retries = append(c.Retries, mark{X: mx, Y: round1(my - 4), Count: num(s.Retries),
				Title: fmt.Sprintf("%s (batches ending %s–%s)", plural(s.Retries, "retry", "retries"), from, to)})
		}
	}
	// The y axis is labelled at 0, the budget (its line's label) and the top.
	ticks := []float64{0, yMax}
	if rep.RequestsPerSecond > 0 {
		y := yOf(rep.RequestsPerSecond)
		c.Budget = &line{X1: left, Y1: y, X2: right, Y2: y, Label: label{X: left - 6, Y: y + 4, Text: trim(rep.RequestsPerSecond) + "/s"}}
	} else {
		ticks = append(ticks, yMax/2)
	}
	for _, rate := range ticks {
		y := yOf(rate)
		c.Grid = append(c.Grid, line{X1: left, Y1: y, X2: right, Y2: y, Label: label{X: left - 6, Y: y + 4, Text: trim(rate) + "/s"}})
	}
	for _, f := range []float64{0, 0.5, 1} {
		c.XLabels = append(c.XLabels, label{X: round1(left + (right-left)*f), Y: bottom + 18, Text: Seconds(span * f),
			Anchor: map[float64]string{0: "start", 0.5: "middle", 1: "end"}[f]})
	}
	c.Caption = fmt.Sprintf("%s, each batch's spread over its time, in %s of %s; peak %s/s",
		plural(int(math.Round(sum)), "batch request", "batch requests"), plural(len(tl.Slots), "slot", "slots"), Seconds(tl.SlotSeconds), trim(peak))
	if rep.RequestsPerSecond > 0 {
		c.Caption += " against a budget of " + trim(rep.RequestsPerSecond) + "/s"
	}
	c.Caption += fmt.Sprintf("; %s answered 429; %s", num(throttled), plural(retries, "retry", "retries"))
	return c
}

// ratioFloor is the least floor a run's time is compared with: paced
// requests go out 1/budget apart, so n take (n-1)/budget; for fewer
// than a second's worth, the run's fixed costs, not its pacing, set its
// time, and it may even beat the floor.
const ratioFloor = 1.0

func durationChart(rep *run.Report) (*chart, string) {
	top := max(rep.DurationSeconds, rep.FloorSeconds)
	if top <= 0 {
		return nil, ""
	}
	c := &chart{Width: funnelWidth, Height: 2*rowH + 4, LabelX: funnelLabelW - 10, BarX: funnelLabelW}
	c.Bars = []bar{
		newBar("took", "took", Seconds(rep.DurationSeconds), "", "in", 0, rep.DurationSeconds/top),
		newBar("floor", "rate-limit floor", Seconds(rep.FloorSeconds), "", "floor", rowH, rep.FloorSeconds/top),
	}
	took := Seconds(rep.DurationSeconds)
	switch {
	case rep.FloorSeconds <= 0:
		return c, "took " + took + "; the rate-limit floor is 0s: no request had to wait for the budget"
	case rep.FloorSeconds < ratioFloor:
		return c, fmt.Sprintf("took %s against a rate-limit floor of %s", took, Seconds(rep.FloorSeconds))
	}
	line := fmt.Sprintf("took %s against a rate-limit floor of %s (%s× the floor; the floor is the requests at the budget, the least any exporter needs)",
		took, Seconds(rep.FloorSeconds), strconv.FormatFloat(rep.DurationSeconds/rep.FloorSeconds, 'f', 2, 64))
	if rep.RateFound > 0 {
		line += fmt.Sprintf("; %s accepted up to %s requests/s (its best 10 s) while it answered 429s, less than the budget: lower requestsPerSecond to about that",
			cmp.Or(rep.Destination, "Autopilot"), strconv.FormatFloat(rep.RateFound, 'f', 1, 64))
	}
	return c, line
}

func rejected(rep *run.Report) *rejections {
	r := &rejections{Which: "All " + num(rep.RejectionsTotal) + " rows that were", Where: "Every one is",
		EmailsShown: rep.EmailsShown}
	switch {
	case rep.RejectionsTotal > len(rep.Rejections):
		r.Which = fmt.Sprintf("The first %s of %s rows that were", num(len(rep.Rejections)), num(rep.RejectionsTotal))
	case rep.RejectionsTotal == 1:
		r.Which, r.Where = "The one row that was", "It is"
	}
	for _, is := range rep.Rejections {
		row := "—" // a removal has no row in the file
		if is.Row > 0 {
			row = strconv.Itoa(is.Row)
		}
		email, reason := is.Email, is.Reason
		if !rep.EmailsShown {
			email, reason = segment.MaskEmail(email), segment.MaskEmails(reason)
		}
		r.Rows = append(r.Rows, rejectedRow{Row: row, Email: email, Reason: reason})
	}
	return r
}

func brakeOf(rep *run.Report) *brake {
	p := rep.Plan
	b := &brake{Command: rep.Brake.Command, Export: rep.Export,
		Limit: "maxRemovalShare " + percent(rep.Brake.MaxRemovalShare)}
	switch {
	case p.Unique == 0:
		b.Figures = fmt.Sprintf("the file has no valid profiles: mirroring it would empty the list (%s)", plural(p.Previous, "contact", "contacts"))
	case p.Previous > 0 && float64(p.Removed)/float64(p.Previous) > rep.Brake.MaxRemovalShare:
		b.Figures = fmt.Sprintf("would take %s of %s off the list (%s)", num(p.Removed), plural(p.Previous, "contact", "contacts"),
			percent(float64(p.Removed)/float64(p.Previous)))
	default:
		b.Figures = fmt.Sprintf("the file has %s against %s before (%s fewer)", plural(p.Unique, "profile", "profiles"),
			plural(p.Previous, "contact", "contacts"), percent(1-float64(p.Unique)/float64(max(1, p.Previous))))
	}
	return b
}

// maskUnlessShown masks the emails in s unless the export shows them.
func maskUnlessShown(rep *run.Report, s string) string {
	if rep.EmailsShown {
		return s
	}
	return segment.MaskEmails(s)
}

func byStatus(m map[string]int) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, code+": "+num(m[code]))
	}
	return strings.Join(parts, " · ")
}

// num formats n with thousands separators: 3015 → "3,015".
func num(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// Seconds formats a report's seconds as the page shows them (and the CLI's
// summary, so the two agree): to a tenth from a second up, to the
// millisecond below, so a short run does not read as 0s.
func Seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func bytesize(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func percent(share float64) string {
	return trim(math.Round(share*1000)/10) + "%"
}

// trim formats f with at most two decimals and no trailing zeros.
func trim(f float64) string {
	return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64)
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// niceCeil rounds up to a round axis top: 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
// times a power of ten.
func niceCeil(f float64) float64 {
	if f <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(f)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8} {
		if m*p >= f {
			return m * p
		}
	}
	return 10 * p
}

// plural says n things: "1 earlier attempt", "3 earlier attempts".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return num(n) + " " + many
}

// requests says a slot's share of requests, which may be fractional:
// "1 request", "0.5 requests".
func requests(n float64) string {
	if n == 1 {
		return "1 request"
	}
	return trim(n) + " requests"
}
