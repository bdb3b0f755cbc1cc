package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Check results.
const (
	Pass = "pass"
	Fail = "fail"
	Skip = "skip"
)

// Check is one verified claim: what was measured, against what threshold,
// and whether it held. A failed critical check fails the run.
type Check struct {
	Level     Level    `json:"level"`
	Phase     string   `json:"phase"`
	Name      string   `json:"name"`
	Status    string   `json:"status"`
	Critical  bool     `json:"critical"`
	Criterion string   `json:"criterion,omitempty"` // the success criterion it counts towards
	Figure    string   `json:"figure"`              // the measurement, for people
	Threshold string   `json:"threshold"`
	Value     *float64 `json:"value,omitempty"` // the measurement as a number in Unit, for programs
	Limit     *float64 `json:"limit,omitempty"`
	Unit      string   `json:"unit,omitempty"`
	Detail    string   `json:"detail,omitempty"`
	AtSeconds float64  `json:"at_seconds"` // since the run started
}

// criterion is one of the success criteria users know from the original
// guide; every check that measures it is folded into one summary row.
type criterion struct {
	Key, Title, Threshold string
	// lowerIsWorse: the threshold is a floor (a score), not a ceiling.
	lowerIsWorse bool
}

// Criterion keys.
const (
	critLeaks      = "leaks"
	critHung       = "hung"
	critScore      = "score"
	critValidation = "validation"
	critAPIP99     = "api_p99"
	critCLI        = "cli"
	critRecovery   = "recovery"
	critSilent     = "silent"
	critHeap       = "heap"
)

var criteria = []criterion{
	{Key: critLeaks, Title: "Zero goroutine or connection leaks", Threshold: "back to baseline within tolerance"},
	{Key: critHung, Title: "Zero hung operations", Threshold: "every operation returns within its deadline"},
	{Key: critScore, Title: "Resilience score, every phase working (healthy)", Threshold: ">= 75", lowerIsWorse: true},
	{Key: critValidation, Title: "Connection validation", Threshold: "<= 3 s"},
	{Key: critAPIP99, Title: "API response time under load (p99)", Threshold: "<= 5 s"},
	{Key: critCLI, Title: "CLI command execution", Threshold: "<= 30 s"},
	{Key: critRecovery, Title: "Recovery after a fault", Threshold: "<= 10 s (target 1.5 s)"},
	{Key: critSilent, Title: "Silent connection caught", Threshold: "within 3-5 s (<= 5 s)"},
	{Key: critHeap, Title: "Heap growth after warm-up", Threshold: "<= 50 %"},
}

// CriterionResult is a success criterion's row in the summary.
type CriterionResult struct {
	Key       string `json:"key"`
	Title     string `json:"title"`
	Threshold string `json:"threshold"`
	Status    string `json:"status"` // pass, fail, or "not measured"
	Figure    string `json:"figure"`
	Checks    int    `json:"checks"`
}

// Report is the outcome of a run.
type Report struct {
	Level     Level             `json:"level"`
	Levels    []Level           `json:"levels_run"`
	Target    string            `json:"target"`
	Setup     []string          `json:"setup"` // how the target was arranged, one line each
	Binary    string            `json:"binary"`
	StartedAt time.Time         `json:"started_at"`
	Seconds   float64           `json:"duration_seconds"`
	Checks    []Check           `json:"checks"`
	Criteria  []CriterionResult `json:"criteria"`
	Notes     []string          `json:"notes,omitempty"`
	Passed    bool              `json:"passed"`
	Verdict   string            `json:"verdict"`
}

// Failed reports whether a critical check failed.
func (r *Report) Failed() bool { return len(r.criticalFailures()) > 0 }

func (r *Report) criticalFailures() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Critical && c.Status == Fail {
			out = append(out, c)
		}
	}
	return out
}

// finish computes the criteria rows and the verdict.
func (r *Report) finish(took time.Duration) {
	r.Seconds = math.Round(took.Seconds()*1000) / 1000
	r.Criteria = r.criteria()
	crit := r.criticalFailures()
	r.Passed = len(crit) == 0
	if r.Passed {
		r.Verdict = "VERDICT: PASS — safe to deploy"
		var warn []string
		skipped := 0
		for _, c := range r.Checks {
			switch c.Status {
			case Fail:
				warn = append(warn, c.qualifiedName())
			case Skip:
				skipped++
			}
		}
		var extra []string
		if len(warn) > 0 {
			extra = append(extra, "warnings: "+listNames(warn, 4))
		}
		if skipped > 0 {
			extra = append(extra, fmt.Sprintf("%d checks skipped", skipped))
		}
		if len(extra) > 0 {
			r.Verdict += " (" + strings.Join(extra, "; ") + ")"
		}
		return
	}
	names := make([]string, len(crit))
	for i, c := range crit {
		names[i] = c.qualifiedName()
	}
	r.Verdict = "VERDICT: FAIL — DO NOT DEPLOY: " + listNames(names, 6)
}

func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, "; ")
	}
	return strings.Join(names[:max], "; ") + fmt.Sprintf(" (+%d more)", len(names)-max)
}

func (c Check) qualifiedName() string { return fmt.Sprintf("%s/%s: %s", c.Level, c.Phase, c.Name) }

// criteria folds the checks into one row per success criterion: failed if
// any of its checks failed, showing the failing or the worst figure.
func (r *Report) criteria() []CriterionResult {
	out := make([]CriterionResult, 0, len(criteria))
	for _, cr := range criteria {
		row := CriterionResult{Key: cr.Key, Title: cr.Title, Threshold: cr.Threshold, Status: "not measured", Figure: "-"}
		var worst *Check
		worstRatio := math.Inf(-1)
		for i := range r.Checks {
			c := &r.Checks[i]
			if c.Criterion != cr.Key || c.Status == Skip {
				continue
			}
			row.Checks++
			if c.Status == Fail {
				if row.Status != Fail {
					worst = c
				}
				row.Status = Fail
				continue
			}
			if row.Status != Fail {
				row.Status = Pass
				ratio := 0.0
				if c.Value != nil && c.Limit != nil && *c.Limit != 0 {
					ratio = *c.Value / *c.Limit
					if cr.lowerIsWorse {
						ratio = -ratio
					}
				}
				if worst == nil || ratio > worstRatio {
					worst, worstRatio = c, ratio
				}
			}
		}
		if worst != nil {
			row.Figure = worst.Figure
			if row.Checks > 1 {
				row.Figure += " (" + worst.Name + ")"
			}
		}
		out = append(out, row)
	}
	return out
}

// WriteJSON writes the whole report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the report: the criteria table, then every check
// grouped by level and phase, then the verdict line.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# ktrdr end-to-end resilience report\n\n")
	fmt.Fprintf(&b, "- level: **%s** (runs %s)\n", r.Level, joinLevels(r.Levels))
	fmt.Fprintf(&b, "- target: %s\n", r.Target)
	for _, s := range r.Setup {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	fmt.Fprintf(&b, "- binary: `%s`\n", r.Binary)
	fmt.Fprintf(&b, "- started %s, took %s\n\n", r.StartedAt.UTC().Format(time.RFC3339), fmtDur(time.Duration(r.Seconds*float64(time.Second))))

	fmt.Fprintf(&b, "## Success criteria\n\n| criterion | threshold | measured | result |\n|---|---|---|---|\n")
	for _, c := range r.Criteria {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", md(c.Title), md(c.Threshold), md(c.Figure), resultWord(c.Status))
	}
	for _, lv := range r.Levels {
		fmt.Fprintf(&b, "\n## %s level\n", lv)
		phase := ""
		for _, c := range r.Checks {
			if c.Level != lv {
				continue
			}
			if c.Phase != phase {
				phase = c.Phase
				fmt.Fprintf(&b, "\n### %s\n\n| result | check | measured | threshold | notes |\n|---|---|---|---|---|\n", phase)
			}
			name := c.Name
			if c.Critical {
				name += " ★"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", resultWord(c.Status), md(name), md(c.Figure), md(c.Threshold), md(c.Detail))
		}
	}
	b.WriteString("\n★ critical: a failure means do not deploy.\n")
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\n**%s**\n", r.Verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSummary writes the short plain-text summary printed after every
// run: the criteria, the counts per level, the failures and the verdict.
func (r *Report) WriteSummary(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CRITERION\tTHRESHOLD\tMEASURED\tRESULT\n")
	for _, c := range r.Criteria {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Title, c.Threshold, oneLine(c.Figure, 70), resultWord(c.Status))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\n")
	for _, lv := range r.Levels {
		n := map[string]int{}
		for _, c := range r.Checks {
			if c.Level == lv {
				n[c.Status]++
			}
		}
		fmt.Fprintf(&b, "%-13s %d passed, %d failed, %d skipped\n", lv.String()+":", n[Pass], n[Fail], n[Skip])
	}
	for _, c := range r.Checks {
		if c.Status != Fail {
			continue
		}
		tag := "warning"
		if c.Critical {
			tag = "FAILED"
		}
		fmt.Fprintf(&b, "%s  %s — %s (threshold %s)", tag, c.qualifiedName(), oneLine(c.Figure, 100), c.Threshold)
		if c.Detail != "" {
			fmt.Fprintf(&b, ": %s", oneLine(c.Detail, 160))
		}
		b.WriteString("\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	fmt.Fprintf(&b, "took %s\n%s\n", fmtDur(time.Duration(r.Seconds*float64(time.Second))), r.Verdict)
	_, err := io.WriteString(w, b.String())
	return err
}

func resultWord(s string) string {
	switch s {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	case Skip:
		return "skip"
	}
	return s
}

func joinLevels(ls []Level) string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = l.String()
	}
	return strings.Join(s, " + ")
}

// md escapes a table cell.
func md(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		return s[:max-3] + "..."
	}
	return s
}

// fmtDur prints a duration with a precision that suits its size.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000)
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		s := strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", d.Seconds()), "0"), ".")
		return s + " s"
	}
	return d.Round(time.Second).String()
}
