package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEDocumentsEveryKnob keeps the README's configuration table true:
// every setting appears with its flag, environment variable and default.
func TestREADMEDocumentsEveryKnob(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, k := range Knobs {
		def := "`" + k.Default + "`"
		if k.Default == "" {
			def = "(none)"
		}
		row := "| `--" + k.Name + "` | `" + k.Env + "` | " + def + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README.md lacks the row for %s: %q", k.Name, row)
		}
	}
}
