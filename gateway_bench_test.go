package claudepool

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// BenchmarkGatewayFirstByte measures what the gateway adds to the time to
// first byte of a streamed Messages call: the same call from a Go client
// straight to a mock API and through the gateway, alternated in one run
// (which goes first swaps each iteration) so that both see the same
// machine. It reports the median of each and their difference; ns/op is
// the time of one call of each kind.
func BenchmarkGatewayFirstByte(b *testing.B) {
	for _, delay := range []time.Duration{0, 50 * time.Millisecond} {
		b.Run(fmt.Sprintf("api-ttfb=%v", delay), func(b *testing.B) { benchGatewayFirstByte(b, delay) })
	}
}

func benchGatewayFirstByte(b *testing.B, delay time.Duration) {
	api := claudepooltest.NewServer(claudepooltest.Config{FirstByteDelay: delay})
	defer api.Close()
	gw, err := newGateway(&upstreamAPI{url: api.URL(), key: "sk-pool"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer gw.close()
	// One client each, keeping its connection as the CLI does.
	direct := &http.Client{Transport: &http.Transport{}}
	defer direct.CloseIdleConnections()
	viaGateway := &http.Client{Transport: &http.Transport{}}
	defer viaGateway.CloseIdleConnections()
	token := gw.register()
	body := []byte(chatBody("hello", true))

	firstByte := func(c *http.Client, url, key string) time.Duration {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Anthropic-Version", "2023-06-01")
		req.Header.Set("X-Api-Key", key)
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var one [1]byte
		if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return took
	}
	call := func(gateway bool) time.Duration {
		if !gateway {
			return firstByte(direct, api.URL()+"/v1/messages?beta=true", "sk-pool")
		}
		// A chat of its own each time, as a pool's process has: the
		// gateway reads the body, applies the chat's (no) parameters and
		// watches the reply.
		gw.bind(token, newAPITurn(&Request{}))
		return firstByte(viaGateway, gw.url+"/v1/messages?beta=true", token)
	}

	// Open both connections first.
	call(false)
	call(true)
	api.Reset()

	directs := make([]time.Duration, 0, b.N)
	gateways := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			directs = append(directs, call(false))
			gateways = append(gateways, call(true))
		} else {
			gateways = append(gateways, call(true))
			directs = append(directs, call(false))
		}
	}
	b.StopTimer()

	if n := len(api.Requests()); n != 2*b.N {
		b.Fatalf("the API saw %d calls, want %d", n, 2*b.N)
	}
	d, g := gwMedian(directs), gwMedian(gateways)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	b.ReportMetric(ms(d), "direct-p50-ms")
	b.ReportMetric(ms(g), "gateway-p50-ms")
	b.ReportMetric(ms(g-d), "added-p50-ms")
}

// gwMedian returns the median of ds, which it sorts.
func gwMedian(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}
