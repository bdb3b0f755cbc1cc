package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs, func(k string) string { return env[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8000" || c.IBPort != 4002 || c.ValidationTimeout != 3*time.Second ||
		c.IdleTimeout != 300*time.Second || c.HealthInterval != time.Minute || c.MaxConns != 4 || c.ClientIDBase != 1 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestPrecedenceFlagsEnvFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ktrdr.json")
	if err := os.WriteFile(file, []byte(`{"ib-port": 4001, "max-conns": 8, "health-interval": "30s", "sim": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load(t, []string{"--config", file, "--max-conns", "6"}, map[string]string{"KTRDR_IB_PORT": "7497"})
	if err != nil {
		t.Fatal(err)
	}
	// file < env < flag
	if c.IBPort != 7497 || c.MaxConns != 6 || c.HealthInterval != 30*time.Second || !c.Sim {
		t.Fatalf("%+v", c)
	}
}

func TestInvalidValuesNamed(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"nope": 1}`), 0o600)
	notJSON := filepath.Join(dir, "x.json")
	os.WriteFile(notJSON, []byte(`ib-port=1`), 0o600)
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--ib-port", "70000"}, nil, `--ib-port "70000"`},
		{[]string{"--ib-port", "abc"}, nil, "not a whole number"},
		{nil, map[string]string{"KTRDR_VALIDATION_TIMEOUT": "10ms"}, "KTRDR_VALIDATION_TIMEOUT"},
		{nil, map[string]string{"KTRDR_VALIDATION_BYPASS": "500ms"}, "below the minimum 1s"},
		{[]string{"--listen", "0.0.0.0:8000"}, nil, "requires a token"},
		{[]string{"--listen", "nonsense"}, nil, "want host:port"},
		{[]string{"--config", bad}, nil, `unknown setting "nope"`},
		{[]string{"--config", notJSON}, nil, "not a JSON object"},
		{[]string{"--config", filepath.Join(dir, "missing.json")}, nil, "config file"},
		{[]string{"--min-idle", "5", "--max-conns", "4"}, nil, "above max-conns"},
		{[]string{"--log-level", "loud"}, nil, "log-level"},
		{[]string{"--sim-time-scale", "-1"}, nil, "sim-time-scale"},
		{[]string{"--listen", "0.0.0.0:8000", "--token", "short"}, nil, "shorter than 16"},
	}
	for _, c := range cases {
		_, err := load(t, c.args, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want it to mention %q", c.args, c.env, err, c.want)
		}
	}
	_, err := load(t, []string{"--listen", "0.0.0.0:8000"}, nil)
	if !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("%v", err)
	}
	if _, err := load(t, []string{"--listen", "0.0.0.0:8000", "--token", "0123456789abcdef"}, nil); err != nil {
		t.Fatalf("token allows any address: %v", err)
	}
}
