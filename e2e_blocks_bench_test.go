package claudepool

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// noisePNG is a PNG of random pixels, which does not compress: side x side
// pixels take about 4*side*side bytes.
func noisePNG(b testing.TB, side int) []byte {
	b.Helper()
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Uint32())
	}
	var out bytes.Buffer
	if err := png.Encode(&out, img); err != nil {
		b.Fatal(err)
	}
	return out.Bytes()
}

// BenchmarkE2EImage compares, on the real CLI through one warm pool
// (Size 1, the pool's prompt, partial messages) against a mock API with
// benchFirstByteDelay, a chat that carries a 100 KB PNG with a text chat,
// interleaved, each after the pool has settled. Metrics, medians in ms:
// KIND-first-text-ms from the start of StreamChat and KIND-overhead-ms,
// the first text minus the API's own time to first byte for the chat's
// request; image-extra-ms is the difference of the overheads' medians.
func BenchmarkE2EImage(b *testing.B) {
	ctx := context.Background()
	e := newE2E(b, claudepooltest.Config{FirstByteDelay: benchFirstByteDelay})
	p, _ := e.pool(b, Config{Size: 1, MaxProcs: 1, Prompt: &SystemPrompt{System: benchSystem}, PartialMessages: true})
	img := noisePNG(b, 160)
	if n := len(img); n < 100<<10 || n > 110<<10 {
		b.Fatalf("the image is %d bytes, not about 100 KB", n)
	}
	a := NewAdapter(p)
	kinds := []struct {
		name  string
		req   Request
		chats []benchChat
	}{
		{name: "text", req: Request{Messages: []Message{{Role: RoleUser, Content: "describe a picture"}}}},
		{name: "image", req: Request{Messages: []Message{{Role: RoleUser, Content: "describe this picture",
			Blocks: []Block{ImageBlock("image/png", img)}}}}},
	}
	settled := []poolWant{{p, 1}}
	b.ResetTimer()
	for range b.N {
		for i := range kinds {
			k := &kinds[i]
			b.StopTimer()
			settle(b, settled)
			b.StartTimer()
			c := runBenchRequest(ctx, a, k.req)
			b.StopTimer()
			if c.err != nil {
				b.Fatalf("%s chat: %v", k.name, c.err)
			}
			k.chats = append(k.chats, c)
		}
	}
	b.StopTimer()
	reqs := e.mock.ChatRequests()
	medians := map[string]time.Duration{}
	for _, k := range kinds {
		api, err := matchChats(reqs, k.chats)
		if err != nil {
			b.Fatal(err)
		}
		var firstText, overhead []time.Duration
		for i, c := range k.chats {
			firstText = append(firstText, c.lat.FirstText)
			overhead = append(overhead, api[i].overhead)
		}
		medians[k.name] = quantile(overhead, 0.5)
		b.ReportMetric(ms(quantile(firstText, 0.5)), k.name+"-first-text-ms")
		b.ReportMetric(ms(medians[k.name]), k.name+"-overhead-ms")
		fmt.Fprintf(os.Stderr, "real CLI, mock API first byte %v, %d chats, %-5s medians: first text %v, overhead %v\n",
			benchFirstByteDelay, len(k.chats), k.name, rnd(quantile(firstText, 0.5)), rnd(medians[k.name]))
	}
	b.ReportMetric(ms(medians["image"]-medians["text"]), "image-extra-ms")
	b.ReportMetric(float64(len(img))/1024, "image-KiB")
}
