package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// Deadlines of the self target's processes.
const (
	// startTimeout bounds the wait for a process's address lines.
	startTimeout = 20 * time.Second
	// stopTimeout is how long a process gets to exit after SIGTERM before
	// it is killed; the server drains requests for up to 10 s.
	stopTimeout = 15 * time.Second
	// killTimeout bounds the wait after SIGKILL.
	killTimeout = 5 * time.Second
)

// proc is one ktrdr subprocess of the self target. Its stdout is copied to
// a log file (and scanned for the address lines), its stderr goes there
// directly; stop ends it and the copier.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string // the log file's path
	exited chan struct{}
	err    error         // Wait's result, set before exited closes
	copied chan struct{} // the stdout copier has finished
}

// startProc runs bin with args and waits until every pattern in want has
// matched a stdout line, returning the first submatch of each.
func startProc(ctx context.Context, name, bin, dir string, args []string, want []*regexp.Regexp) (*proc, []string, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = scrubbedEnv()
	cmd.Stdout = pw // a file: the child writes to it directly, no copying goroutine in exec
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logf.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	pw.Close() // the child holds its own copy; EOF comes when it exits
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{}), copied: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	found := make([]string, len(want))
	lines := make(chan string, 16)
	go func() {
		defer close(p.copied)
		defer logf.Close()
		defer pr.Close()
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			select {
			case lines <- line:
			default: // nobody is looking for addresses any more
			}
		}
	}()

	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	missing := len(want)
	for missing > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				p.stop()
				return nil, nil, fmt.Errorf("%s exited before printing its address (log %s): %s", name, logPath, tail(logPath))
			}
			for i, re := range want {
				if m := re.FindStringSubmatch(line); m != nil && found[i] == "" {
					found[i] = m[1]
					missing--
				}
			}
		case <-deadline.C:
			p.stop()
			return nil, nil, fmt.Errorf("%s printed no address within %s (log %s)", name, startTimeout, logPath)
		case <-ctx.Done():
			p.stop()
			return nil, nil, ctx.Err()
		}
	}
	return p, found, nil
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, kills after stopTimeout, and waits for the process
// and its output copier. It reports how the process ended.
func (p *proc) stop() error {
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	var err error
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		err = fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.name, stopTimeout)
		select {
		case <-p.exited:
		case <-time.After(killTimeout):
			return fmt.Errorf("%s did not exit after SIGKILL", p.name)
		}
	}
	select {
	case <-p.copied:
	case <-time.After(killTimeout):
		// A grandchild holding stdout would keep the copier reading; ktrdr starts none.
		return errors.Join(err, fmt.Errorf("%s's output is still open after it exited", p.name))
	}
	if err == nil && p.err != nil {
		var ee *exec.ExitError
		if !errors.As(p.err, &ee) || ee.ExitCode() != 0 {
			err = fmt.Errorf("%s exited with %v after SIGTERM (log %s)", p.name, p.err, p.log)
		}
	}
	return err
}

// scrubbedEnv is the environment without KTRDR_* settings: the self
// target's processes take their configuration from flags only, so a
// developer's KTRDR_LISTEN or KTRDR_TOKEN cannot change what is measured.
func scrubbedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KTRDR_") {
			env = append(env, kv)
		}
	}
	return env
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
