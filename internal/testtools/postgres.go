package testtools

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgreSQL for tests. Every test that needs a database gets one of its
// own, created for it and dropped after it, on the first server of:
//
//  1. $API_TOKENS_TEST_DATABASE_URL: a database URL whose user may create
//     databases;
//  2. a server on 127.0.0.1:5432 (the project's machines run one), as the
//     postgres user;
//  3. a throwaway cluster of this test process, from Debian's PostgreSQL
//     (installed if missing), run as the postgres user in a temp dir and
//     stopped when the process ends; API_TOKENS_TEST_POSTGRES=cluster
//     picks it even when a server answers, to try what a fresh machine
//     does.
//
// Creating a database takes about a second, so databases are created
// ahead of need in the background and dropped in the background; a
// package's TestMain calls FinishPostgres to wait for the drops.

// PostgresVersion is the Debian PostgreSQL major version the throwaway
// clusters run.
const PostgresVersion = "15"

// dbPrefix starts the name of every test database, followed by the pid of
// the test process, so a later run can drop what a killed run left.
const dbPrefix = "apitest_"

// prefetch is how many databases are created ahead of need.
const prefetch = 2

type pgServer struct {
	admin string // DSN of the server's maintenance database
	local bool   // on this machine: test processes' pids are meaningful
	ready chan string
	errs  chan error
	stop  chan struct{}
	done  chan struct{} // closed when prefetch returns
	seq   int
	drops sync.WaitGroup
}

var (
	pgOnce   sync.Once
	pgShared *pgServer
	pgErr    error
)

// PostgresDatabase returns the connection string of a new, empty database
// that is dropped when the test ends.
func PostgresDatabase(tb testing.TB) string {
	tb.Helper()
	srv := postgresServer(tb)
	select {
	case name := <-srv.ready:
		tb.Cleanup(func() { srv.dropLater(name) })
		return withDatabase(srv.admin, name)
	case err := <-srv.errs:
		tb.Fatalf("creating a test database: %v", err)
	case <-time.After(2 * time.Minute):
		tb.Fatal("creating a test database took over 2 minutes")
	}
	return ""
}

// PostgresAdminDSN returns the DSN of the test server's maintenance
// database, for tests that act on the server itself (terminating
// connections).
func PostgresAdminDSN(tb testing.TB) string {
	tb.Helper()
	return postgresServer(tb).admin
}

// FinishPostgres waits for the test databases being dropped and drops the
// ones created ahead that no test used. Call it from TestMain after
// m.Run.
func FinishPostgres() {
	if pgShared == nil {
		return
	}
	close(pgShared.stop)
	<-pgShared.done
	for len(pgShared.ready) > 0 {
		pgShared.dropLater(<-pgShared.ready)
	}
	pgShared.drops.Wait()
}

func postgresServer(tb testing.TB) *pgServer {
	tb.Helper()
	pgOnce.Do(func() { pgShared, pgErr = findPostgres(tb) })
	if pgErr != nil {
		tb.Fatalf("no PostgreSQL for the tests: %v", pgErr)
	}
	return pgShared
}

func findPostgres(tb testing.TB) (*pgServer, error) {
	srv := &pgServer{ready: make(chan string, prefetch), errs: make(chan error, 1), stop: make(chan struct{}), done: make(chan struct{})}
	switch {
	case os.Getenv("API_TOKENS_TEST_DATABASE_URL") != "":
		srv.admin = os.Getenv("API_TOKENS_TEST_DATABASE_URL")
		u, err := url.Parse(srv.admin)
		srv.local = err == nil && (u.Hostname() == "127.0.0.1" || u.Hostname() == "localhost" || u.Hostname() == "")
	case os.Getenv("API_TOKENS_TEST_POSTGRES") != "cluster" && answers("127.0.0.1:5432"):
		srv.admin, srv.local = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", true
	default:
		c, err := startCluster(tb, true)
		if err != nil {
			return nil, err
		}
		srv.admin, srv.local = c.DSN("postgres"), true
	}
	if err := srv.sweep(); err != nil {
		return nil, err
	}
	go srv.prefetch()
	return srv, nil
}

func answers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func withDatabase(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	u.Path = "/" + name
	return u.String()
}

// exec runs one statement on the maintenance database.
func (s *pgServer) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func (s *pgServer) prefetch() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		s.seq++
		name := fmt.Sprintf("%s%d_%d", dbPrefix, os.Getpid(), s.seq)
		if err := s.exec("CREATE DATABASE " + name); err != nil {
			select {
			case s.errs <- err:
			default:
			}
			return
		}
		select {
		case s.ready <- name:
		case <-s.stop:
			s.dropLater(name)
			return
		}
	}
}

func (s *pgServer) dropLater(name string) {
	s.drops.Go(func() { _ = s.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
}

// sweep drops the test databases of test processes that are gone (killed
// before they could drop them).
func (s *pgServer) sweep() error {
	if !s.local {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1`, dbPrefix+"%")
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, name := range names {
		pid, err := strconv.Atoi(strings.Split(strings.TrimPrefix(name, dbPrefix), "_")[0])
		if err != nil || syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	return nil
}

// PostgresCluster is a PostgreSQL server of the test's own, on a free
// loopback port, with its data in a temp dir: for tests that stop or
// restart the server, which the shared one must never be.
type PostgresCluster struct {
	dir, bin, socketDir string
	port                int
	log                 string
}

// StartPostgresCluster initializes and starts a cluster for the test and
// removes it when the test ends.
func StartPostgresCluster(tb testing.TB) *PostgresCluster {
	tb.Helper()
	c, err := startCluster(tb, false)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Stop(); os.RemoveAll(c.dir) })
	return c
}

// DSN is the connection string of database db on the cluster.
func (c *PostgresCluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Port is the cluster's TCP port.
func (c *PostgresCluster) Port() int { return c.port }

// startCluster makes a cluster in a new directory owned by the postgres
// user. With watchdog, the server is stopped and its directory removed
// once this test process ends, however it ends.
func startCluster(tb testing.TB, watchdog bool) (*PostgresCluster, error) {
	DebianProgram(tb, "postgresql-"+PostgresVersion, "/usr/lib/postgresql/"+PostgresVersion+"/bin/initdb")
	dir, err := os.MkdirTemp("", "api-tokens-pg-")
	if err != nil {
		return nil, err
	}
	c := &PostgresCluster{dir: dir, bin: "/usr/lib/postgresql/" + PostgresVersion + "/bin", port: FreePort(tb)}
	c.socketDir = filepath.Join(dir, "run")
	c.log = filepath.Join(dir, "postgres.log")
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(c.socketDir, 0o700); err != nil {
		return nil, err
	}
	if err := chownToPostgres(dir, c.socketDir); err != nil {
		return nil, err
	}
	if out, err := c.asPostgres(c.bin+"/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 200\n", c.port, c.socketDir)
	if err := appendFile(filepath.Join(data, "postgresql.conf"), conf); err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	if watchdog {
		// Stops the server and removes its files once this process is gone.
		script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done; runuser -u postgres -- %s/pg_ctl -D %s -m immediate stop >/dev/null 2>&1; rm -rf %s`,
			os.Getpid(), c.bin, data, dir)
		w := exec.Command("bash", "-c", script)
		w.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := w.Start(); err != nil {
			return nil, err
		}
		go w.Wait()
	}
	return c, nil
}

// asPostgres runs a PostgreSQL program as the postgres user (initdb and
// the server refuse to run as root).
func (c *PostgresCluster) asPostgres(prog string, args ...string) *exec.Cmd {
	if os.Geteuid() != 0 {
		return exec.Command(prog, args...)
	}
	return exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
}

// Start starts the server and waits until it accepts connections.
func (c *PostgresCluster) Start() error {
	out, err := c.asPostgres(c.bin+"/pg_ctl", "-D", filepath.Join(c.dir, "data"), "-l", c.log, "-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(c.log)
		return fmt.Errorf("starting PostgreSQL: %v\n%s\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server at once (clients see their connections dropped).
func (c *PostgresCluster) Stop() {
	_ = c.asPostgres(c.bin+"/pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "stop").Run()
}

// Restart stops and starts the server.
func (c *PostgresCluster) Restart() error {
	c.Stop()
	return c.Start()
}

// CreateDatabase makes an empty database on the cluster.
func (c *PostgresCluster) CreateDatabase(tb testing.TB, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatal(err)
	}
	return c.DSN(name)
}

func chownToPostgres(paths ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	out, err := exec.Command("chown", append([]string{"postgres:postgres"}, paths...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chown: %v: %s", err, out)
	}
	return nil
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
