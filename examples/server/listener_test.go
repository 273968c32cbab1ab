package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// testLimits are the public listener's limits in the tests: long ones, so
// that a test shortens only the one it is about.
func testLimits() options {
	return options{readHeaderTimeout: testWait, readTimeout: testWait, idleTimeout: testWait,
		maxHeaderBytes: defaultMaxHeaderBytes, maxConns: 64}
}

// servePublic serves h as run does, on listener and server built by
// publicListener and publicServer with o's limits, and returns the
// address. wrap, if not nil, wraps the TCP listener first. Each request's
// handler sends on done, if not nil, once it has returned.
func servePublic(t *testing.T, o options, h http.Handler, wrap func(net.Listener) net.Listener, done chan<- struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if wrap != nil {
		ln = wrap(ln)
	}
	ln = publicListener(ln, o)
	if done != nil {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() { done <- struct{}{} }()
			inner.ServeHTTP(w, r)
		})
	}
	srv := publicServer(o, h, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		select {
		case err := <-served:
			require.ErrorIs(t, err, http.ErrServerClosed)
		case <-time.After(testWait):
			t.Error("Serve did not return after Close")
		}
	})
	return ln.Addr().String()
}

// dial opens a connection to addr that the test closes at its end.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testWait)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitClosed reads c until the server closes it, within within, and fails
// the test when c is still open then. It returns what was read.
func waitClosed(t *testing.T, c net.Conn, within time.Duration) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	var b strings.Builder
	_, err := io.Copy(&b, c) // nil at EOF
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	return b.String()
}

// trickle writes p to c one byte every interval until p is written, c
// fails or stop is closed, and closes the returned channel then.
func trickle(c net.Conn, p string, interval time.Duration, stop <-chan struct{}) <-chan struct{} {
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; i < len(p); i++ {
			select {
			case <-tick.C:
			case <-stop:
				return
			}
			if _, err := c.Write([]byte{p[i]}); err != nil {
				return
			}
		}
	}()
	return ended
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
}

// getOn sends GET /healthz on c and returns the response's status, or
// the read error.
func getOn(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration) (int, error) {
	t.Helper()
	_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// TestSlowBodyCut: a client that sends its headers, then its body a byte
// at a time, is cut at -read-timeout although it never stops sending; it
// gets a 408 if it still reads, and takes no process.
func TestSlowBodyCut(t *testing.T) {
	ts := newTestServer(t)
	o := testLimits()
	o.readTimeout = 200 * time.Millisecond
	done := make(chan struct{}, 1)
	addr := servePublic(t, o, ts.api, nil, done)

	c := dial(t, addr)
	_, err := io.WriteString(c, "POST /v1/messages HTTP/1.1\r\nHost: test\r\nAnthropic-Version: 2023-06-01\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	require.NoError(t, err)
	stop := make(chan struct{})
	sent := trickle(c, strings.Repeat(" ", 999), 50*time.Millisecond, stop)
	defer func() { close(stop); <-sent }()

	start := time.Now()
	got := waitClosed(t, c, 5*time.Second)
	t.Logf("closed after %v", time.Since(start))
	if got != "" { // a reset may drop the answer before the client reads it
		require.True(t, strings.HasPrefix(got, "HTTP/1.1 408 "), got)
	}
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("handler still running")
	}
	require.Contains(t, ts.logs.String(), "status=408")
	st := ts.pool.Stats()
	require.Zero(t, st.WarmAcquires+st.ColdAcquires, "a request never received took a process")
}

// TestSlowHeaderCut: a client that never finishes its headers, though it
// keeps sending them a byte at a time, is cut at -read-header-timeout.
func TestSlowHeaderCut(t *testing.T) {
	o := testLimits()
	o.readHeaderTimeout = 200 * time.Millisecond
	addr := servePublic(t, o, okHandler(), nil, nil)

	c := dial(t, addr)
	_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: test\r\n")
	require.NoError(t, err)
	stop := make(chan struct{})
	sent := trickle(c, "X-Slow: "+strings.Repeat("a", 1000), 50*time.Millisecond, stop)
	defer func() { close(stop); <-sent }()
	waitClosed(t, c, 5*time.Second)
}

// TestIdleConnectionClosed: a keep-alive connection is closed after
// -idle-timeout without a request, even with a long -read-timeout, which
// net/http would use for idle connections too.
func TestIdleConnectionClosed(t *testing.T) {
	o := testLimits()
	o.idleTimeout = 200 * time.Millisecond
	addr := servePublic(t, o, okHandler(), nil, nil)

	c := dial(t, addr)
	status, err := getOn(t, c, bufio.NewReader(c), testWait)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	waitClosed(t, c, 5*time.Second)
}

// TestHeaderTooLarge: headers over -max-header-bytes get a 431.
func TestHeaderTooLarge(t *testing.T) {
	o := testLimits()
	o.maxHeaderBytes = 1 << 10
	addr := servePublic(t, o, okHandler(), nil, nil)
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
	require.NoError(t, err)
	// net/http allows 4 KiB beyond MaxHeaderBytes.
	req.Header.Set("X-Big", strings.Repeat("a", 8<<10))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)

	req.Header.Set("X-Big", strings.Repeat("a", 512))
	resp, err = tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestMaxConns: with -max-conns 2 and two connections open, a third is
// not served until one of them closes.
func TestMaxConns(t *testing.T) {
	o := testLimits()
	o.maxConns = 2
	addr := servePublic(t, o, okHandler(), nil, nil)

	var open []net.Conn
	for range 2 {
		c := dial(t, addr)
		status, err := getOn(t, c, bufio.NewReader(c), testWait)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		open = append(open, c) // kept alive
	}
	third := dial(t, addr) // the kernel's accept queue takes it
	br := bufio.NewReader(third)
	_, err := getOn(t, third, br, 200*time.Millisecond)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "the third connection was served: %v", err)

	require.NoError(t, open[0].Close())
	require.NoError(t, third.SetReadDeadline(time.Now().Add(testWait)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "the third connection not served after one closed")
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestLimitListenerCloseEndsAccept: an Accept waiting for a slot returns
// when the listener is closed.
func TestLimitListenerCloseEndsAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(inner, 1)
	dial(t, inner.Addr().String())
	held, err := ln.Accept()
	require.NoError(t, err)
	defer held.Close()

	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
			err = errors.New("accepted beyond the limit")
		}
		accepted <- err
	}()
	require.NoError(t, ln.Close())
	select {
	case err := <-accepted:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(testWait):
		t.Fatal("Accept still waiting after Close")
	}
	require.NoError(t, held.Close())
	require.Empty(t, ln.sem, "the slot given back")
}

// TestStreamOutlivesReadTimeout: -read-timeout bounds reading the
// request, not the reply: a streamed reply goes on past it.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	ts := newTestServer(t)
	ts.api.heartbeat = 20 * time.Millisecond
	o := testLimits()
	o.readTimeout = 100 * time.Millisecond
	done := make(chan struct{}, 1)
	addr := servePublic(t, o, ts.api, nil, done)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/messages",
		strings.NewReader(messagesBody(t, true, nil, "x "+fakecli.Marker(fakecli.ModeHang))))
	require.NoError(t, err)
	setAPIVersion(req)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// 20 pings, 20 ms apart at the least: 4 read timeouts later, the
	// stream is still open.
	sc := bufio.NewScanner(resp.Body)
	pings := 0
	for pings < 20 && sc.Scan() {
		if sc.Text() == "event: ping" {
			pings++
		}
	}
	require.Equal(t, 20, pings, "the stream ended: %v", sc.Err())
	cancel()
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("handler still running")
	}
}

// sndbufListener shrinks the send buffer of each accepted connection, so
// that a client that does not read blocks the server's writes soon.
type sndbufListener struct{ net.Listener }

func (l sndbufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// TestStalledReaderCut: a client that stops reading a streamed reply
// holds its handler no longer than the chat's timeout and the write
// grace, although the server has no WriteTimeout.
func TestStalledReaderCut(t *testing.T) {
	ts := newTestServer(t, fakecli.EnvHugeBytes+"=8000000", fakecli.EnvChunks+"=400")
	ts.api.chatTimeout = 500 * time.Millisecond
	ts.api.writeGrace = 100 * time.Millisecond
	done := make(chan struct{}, 1)
	addr := servePublic(t, testLimits(), ts.api, func(ln net.Listener) net.Listener { return sndbufListener{ln} }, done)

	d := net.Dialer{Timeout: testWait, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	body := chatBody("x " + fakecli.Marker(fakecli.ModeHuge))
	_, err = io.WriteString(c, "POST /chat HTTP/1.1\r\nHost: test\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
	require.NoError(t, err)
	// The client reads nothing: the server's writes block once the
	// buffers are full, until the write deadline.
	select {
	case <-done:
	case <-time.After(testWait):
		t.Fatal("handler still blocked writing to a client that stopped reading")
	}
	require.Contains(t, ts.logs.String(), "msg=chat")
}

// TestKeepAliveAfterChatDeadline: the write deadline a chat set does not
// outlive it: the next request on the connection, past that deadline, is
// answered.
func TestKeepAliveAfterChatDeadline(t *testing.T) {
	ts := newTestServer(t)
	ts.api.chatTimeout = 200 * time.Millisecond
	ts.api.writeGrace = 0
	addr := servePublic(t, testLimits(), ts.api, nil, nil)

	c := dial(t, addr)
	br := bufio.NewReader(c)
	body := messagesBody(t, false, nil, "hello")
	start := time.Now()
	_, err := io.WriteString(c, "POST /v1/messages HTTP/1.1\r\nHost: test\r\nAnthropic-Version: 2023-06-01\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(testWait)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	// Let the chat's write deadline pass: not a synchronization, the
	// point of the test.
	<-time.After(time.Until(start.Add(ts.api.chatTimeout + 50*time.Millisecond)))
	status, err := getOn(t, c, br, testWait)
	require.NoError(t, err, "the connection broke on the old deadline")
	require.Equal(t, http.StatusOK, status)
}
