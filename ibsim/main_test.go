package ibsim

import (
	"testing"
	"time"

	"github.com/ktrdr/ktrdr/tws"
	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// simulator promises that Close releases everything it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// PacingProbe exposes the historical pacing rules to the black-box tests in
// package ibsim_test, so boundaries can be checked with explicit times
// instead of waiting for real windows to pass.
type PacingProbe struct{ p *pacer }

// NewPacingProbe returns an empty pacer whose windows are divided by scale.
func NewPacingProbe(scale float64) *PacingProbe { return &PacingProbe{p: newPacer(scale)} }

// Admit applies the rules to m for instrument in at now: "" when allowed,
// otherwise the rule broken.
func (tp *PacingProbe) Admit(now time.Time, in *Instrument, m *tws.ReqHistoricalData) string {
	return tp.p.admit(now, pacingKeys(in, m))
}
