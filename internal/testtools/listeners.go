package testtools

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SoleListeners reports the TCP ports on which process pid listens but
// not alone: pid has several listening sockets on it (an old config's
// server has not closed its listener yet), or another process listens on
// it too. It returns nil when there are none, and also when the system
// has no /proc/net/tcp to tell (not Linux).
func SoleListeners(pid int) error {
	byPort, err := listeningSockets()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	own, err := socketInodes(pid)
	if err != nil {
		return err
	}
	var problems []string
	ports := make([]int, 0, len(byPort))
	for port := range byPort {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	for _, port := range ports {
		inodes := byPort[port]
		mine := 0
		for _, ino := range inodes {
			if own[ino] {
				mine++
			}
		}
		switch {
		case mine == 0:
			// not pid's port
		case mine < len(inodes):
			problems = append(problems, fmt.Sprintf("port %d: %d listening sockets, only %d of them process %d's (another process listens on the same port)", port, len(inodes), mine, pid))
		case mine > 1:
			problems = append(problems, fmt.Sprintf("port %d: process %d has %d listening sockets on it (a replaced server is still listening)", port, pid, mine))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// WaitSoleListeners waits, up to 10 s, until SoleListeners(pid) holds and
// fails tb with the ports that kept it from holding.
//
// Why: on Linux, Caddy opens every listener with SO_REUSEPORT, and a
// config (re)load binds a new socket next to the old config's on the same
// port: for a moment both listen, and the kernel hands each new connection
// to one of them. The old server then closes its socket: a connection
// still queued on it is reset, and one it accepted but had not yet read is
// closed unanswered (net/http drops a request read after Shutdown began).
// The /load answer does not wait for that (caddyhttp.App.Stop only waits
// until the shutdowns have started, and the old admin endpoint stops in
// the background). The same option lets another process, e.g. a second
// test binary running the same tests on the same machine, bind the same
// port without an error and take part of the connections.
//
// Once this holds after a (re)load, the replaced config no longer
// listens, so a new connection can only reach the config just loaded and
// nothing needs to be retried; a port shared with another process fails
// the test with the port named.
func WaitSoleListeners(tb testing.TB, pid int) {
	tb.Helper()
	if err := AwaitSoleListeners(pid, 10*time.Second); err != nil {
		tb.Fatalf("after 10s the listeners are still not settled: %v", err)
	}
}

// AwaitSoleListeners polls SoleListeners(pid) until it holds or timeout
// has passed, and returns its last error. Unlike WaitSoleListeners it can
// be called from any goroutine.
func AwaitSoleListeners(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := SoleListeners(pid)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listeningSockets returns, by local port, the inodes of the TCP sockets
// in LISTEN state in this network namespace (IPv4 and IPv6).
func listeningSockets() (map[int][]uint64, error) {
	byPort := map[int][]uint64{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && name == "/proc/net/tcp6" {
				continue // IPv6 disabled
			}
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // 0A is TCP_LISTEN
				continue
			}
			_, portHex, ok := strings.Cut(fields[1], ":")
			if !ok {
				continue
			}
			port, err1 := strconv.ParseUint(portHex, 16, 16)
			ino, err2 := strconv.ParseUint(fields[9], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			byPort[int(port)] = append(byPort[int(port)], ino)
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %v", name, err)
		}
	}
	return byPort, nil
}

// socketInodes returns the inodes of the sockets process pid has open.
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	inodes := map[uint64]bool{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if rest, ok := strings.CutPrefix(target, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
				inodes[ino] = true
			}
		}
	}
	return inodes, nil
}
