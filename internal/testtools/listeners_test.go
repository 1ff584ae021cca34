//go:build linux

package testtools

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// listenReusePort listens on addr with SO_REUSEPORT, as Caddy does.
func listenReusePort(t *testing.T, addr string) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSoleListeners: a second socket on a port, this process's (a config
// replaced but still listening) or another process's, is reported with
// the port; once it is closed the ports are settled again.
func TestSoleListeners(t *testing.T) {
	pid := os.Getpid()
	first := listenReusePort(t, "127.0.0.1:0")
	defer first.Close()
	port := first.Addr().(*net.TCPAddr).Port
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := SoleListeners(pid); err != nil {
		t.Fatalf("one socket: %v", err)
	}

	second := listenReusePort(t, addr)
	want := fmt.Sprintf("port %d: process %d has 2 listening sockets", port, pid)
	if err := SoleListeners(pid); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("two sockets of this process: %v, want %q", err, want)
	}
	second.Close()
	if err := SoleListeners(pid); err != nil {
		t.Errorf("after closing the second socket: %v", err)
	}

	// Another process binds the same port: it listens until its stdin
	// closes.
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenInChild$")
	cmd.Env = append(os.Environ(), "TESTTOOLS_LISTEN="+addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("the child process said %q (%v)", line, err)
	}
	want = fmt.Sprintf("port %d: 2 listening sockets, only 1 of them process %d's", port, pid)
	if err := SoleListeners(pid); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a socket of another process: %v, want %q", err, want)
	}
	// The child's view: its one socket is shared with this process.
	if err := SoleListeners(cmd.Process.Pid); err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(port)) {
		t.Errorf("seen from the child: %v", err)
	}
}

// TestListenInChild is TestSoleListeners's other process.
func TestListenInChild(t *testing.T) {
	addr := os.Getenv("TESTTOOLS_LISTEN")
	if addr == "" {
		t.Skip("run by TestSoleListeners")
	}
	l := listenReusePort(t, addr)
	defer l.Close()
	fmt.Println("listening")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
