package e2e

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Level is how far a run goes. Each level includes the ones below it.
type Level int

// Levels, as the original system's test runner named them.
const (
	// Basic needs no gateway: every endpoint and command answers in time
	// with a clear message and the right code, and nothing leaks.
	Basic Level = iota + 1
	// Standard proves each resilience phase against a gateway.
	Standard
	// Exhaustive adds concurrent load, every fault under that load, a
	// soak and recovery times.
	Exhaustive
)

var levelNames = map[Level]string{Basic: "basic", Standard: "standard", Exhaustive: "exhaustive"}

func (l Level) String() string {
	if s, ok := levelNames[l]; ok {
		return s
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// MarshalText writes the level's name in reports.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name, so that a JSON report reads back.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err == nil {
		*l = v
	}
	return err
}

// ParseLevel reads basic, standard or exhaustive.
func ParseLevel(s string) (Level, error) {
	for l, name := range levelNames {
		if strings.EqualFold(strings.TrimSpace(s), name) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("level %q: want basic, standard or exhaustive", s)
}

// SelfTarget is Options.Target's value for "start my own simulator and server".
const SelfTarget = "self"

// Defaults and floors.
const (
	// DefaultSoak is the exhaustive level's soak.
	DefaultSoak = 5 * time.Minute
	// minLoad is the exhaustive level's load duration: the original
	// guide's "heavy load" ran for a minute; shorter would not show a
	// slow leak or a pool that degrades after its first idle collections.
	minLoad = 60 * time.Second
	// loadWorkers is how many operations run at once under load.
	loadWorkers = 50
	// cliWorkers of them run CLI commands (a process each), the rest call the API.
	cliWorkers = 10
)

// Options configures a run.
type Options struct {
	// Level to run (with every level below it).
	Level Level
	// Target is SelfTarget, or the base URL of a running `ktrdr serve`.
	Target string
	// IBHost and IBPort name a real gateway (IBPort 0: none). With the
	// self target, the server is pointed at it instead of a simulator;
	// with a URL target it is probed directly and used to hold a client id.
	IBHost string
	IBPort int
	// Bin is the ktrdr binary: it runs the simulator and the server of the
	// self target, and every CLI check.
	Bin string
	// Token is the API's bearer token, for a URL target that requires one.
	Token string
	// Soak is the exhaustive level's soak; default DefaultSoak.
	Soak time.Duration
	// Progress receives one line per step and per check as the run goes;
	// nil keeps quiet.
	Progress io.Writer

	// load shortens the exhaustive load below minLoad; only the package's
	// own tests set it, to keep CI time in bounds.
	load time.Duration
	// faultHold is how long each fault of the exhaustive level stays on;
	// default 3s.
	faultHold time.Duration
}

// Errors Run returns when it cannot run at all; the report holds the
// prerequisite checks that explain them.
var (
	// ErrRefused: the run would be unsafe (a live account) or the options are wrong.
	ErrRefused = errors.New("e2e: refused")
	// ErrUnreachable: the target API or gateway cannot be reached.
	ErrUnreachable = errors.New("e2e: target unreachable")
)

func (o Options) withDefaults() (Options, error) {
	if o.Level < Basic || o.Level > Exhaustive {
		return o, fmt.Errorf("%w: level %d: want basic, standard or exhaustive", ErrRefused, o.Level)
	}
	if o.Target == "" {
		o.Target = SelfTarget
	}
	if o.Bin == "" {
		return o, fmt.Errorf("%w: the ktrdr binary to run is not set", ErrRefused)
	}
	if o.Soak <= 0 {
		o.Soak = DefaultSoak
	}
	if o.load <= 0 {
		o.load = minLoad
	}
	if o.faultHold <= 0 {
		o.faultHold = 3 * time.Second
	}
	if o.IBPort < 0 || o.IBPort > 65535 {
		return o, fmt.Errorf("%w: --ib-port %d: want 1..65535", ErrRefused, o.IBPort)
	}
	if o.IBPort > 0 && o.IBHost == "" {
		o.IBHost = "127.0.0.1"
	}
	return o, nil
}

func (o Options) self() bool { return o.Target == SelfTarget }
