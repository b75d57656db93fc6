package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a process the harness started. Its combined output goes to a log
// file and to an in-memory buffer that tests can wait on.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	out     *watchBuffer
	exited  chan struct{}
	err     error
}

// StartProc starts cmd, capturing stdout and stderr under dir/name.log. It
// is stopped by PID in t.Cleanup; on a failed test the tail of its log is
// written to the test log.
func StartProc(t testing.TB, dir, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: name, LogPath: filepath.Join(dir, name+".log"), cmd: cmd, out: newWatchBuffer(), exited: make(chan struct{})}
	f, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatalf("e2e: %s: %v", name, err)
	}
	w := io.MultiWriter(f, p.out)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Stdin = nil
	// Its own process group, so a terminal's ^C does not race our cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("e2e: start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- %s (pid %d) output, last 80 lines, full log %s ---\n%s", name, cmd.Process.Pid, p.LogPath, lastLines(p.out.String(), 80))
		}
	})
	return p
}

// PID of the process.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output is everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM to the process (by PID), then SIGKILL after 5 s, and
// waits for it to exit.
func (p *Proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill kills the process (SIGKILL, by PID), as a crash or a power loss
// ends it, and waits for it to exit.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// WaitFor waits until the output has a line matching re and returns it. It
// fails early if the process exits first.
func (p *Proc) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	return p.out.waitFor(ctx, re, p.exited)
}

// Lines are the complete lines of the output so far, each with the time its
// end arrived: a profile of what a VM's console showed when (test/bench).
func (p *Proc) Lines() []Line { return p.out.lines() }

// Line is one line of output ("\r" removed) and when its end was written.
type Line struct {
	Text string
	At   time.Time
}

// watchBuffer is an io.Writer that lets readers wait for a matching line.
type watchBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
	// ends[i] is the buffer's length after the i-th write, at times[i].
	ends  []int
	times []time.Time
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{changed: make(chan struct{})} }

func (w *watchBuffer) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	w.ends = append(w.ends, w.buf.Len())
	w.times = append(w.times, time.Now())
	close(w.changed)
	w.changed = make(chan struct{})
	return len(b), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *watchBuffer) lines() []Line {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Line
	data := w.buf.Bytes()
	start := 0
	for i, c := range data {
		if c != '\n' {
			continue
		}
		// The write that brought byte i: the first whose end is past it.
		k := sort.SearchInts(w.ends, i+1)
		out = append(out, Line{Text: strings.ReplaceAll(string(data[start:i]), "\r", ""), At: w.times[k]})
		start = i + 1
	}
	return out
}

func (w *watchBuffer) waitFor(ctx context.Context, re *regexp.Regexp, exited <-chan struct{}) (string, error) {
	for {
		w.mu.Lock()
		// Serial consoles end lines with \r\n and firmware repaints with \r:
		// match per \n-line with the \r removed.
		text := strings.ReplaceAll(w.buf.String(), "\r", "")
		changed := w.changed
		w.mu.Unlock()
		// Only complete lines: a line is written to the console in pieces.
		lines := strings.Split(text, "\n")
		for _, l := range lines[:len(lines)-1] {
			if re.MatchString(l) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-exited:
			// Drain what was written just before the exit.
			if l := findLine(w.String(), re); l != "" {
				return l, nil
			}
			return "", fmt.Errorf("e2e: process exited before printing %q", re)
		case <-ctx.Done():
			return "", fmt.Errorf("e2e: waiting for %q: %w", re, ctx.Err())
		}
	}
}

func findLine(text string, re *regexp.Regexp) string {
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r", ""), "\n") {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

func lastLines(s string, n int) string {
	s = strings.ReplaceAll(s, "\r", "")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogDir returns the directory for a test's logs and VM files:
// $FLEETBOOT_E2E_LOGDIR/<test name> when set (kept after the run, for CI
// artifacts and debugging), else a temporary directory.
func LogDir(t testing.TB) string {
	t.Helper()
	root := os.Getenv("FLEETBOOT_E2E_LOGDIR")
	if root == "" {
		return t.TempDir()
	}
	d := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
