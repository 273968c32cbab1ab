// Command drive runs the cluster demo's conversations through the load
// balancer and reports what the replicas' pools did with them.
//
// Phase 1 runs -conversations conversations of -turns turns each, with
// every replica up; phase 2 runs as many again and kills the replica
// -kill (SIGKILL, as a crash would) in the middle of a turn, once
// -kill-after turns have been answered. Each turn sends the whole history,
// as a Messages API client does, with the conversation's key
// (claudepool.ConversationKey) in X-Conversation-Key, on which the
// balancer hashes. The report gives,
// per phase, the turns answered and lost, the continued rate of turns 2
// and later from each replica's Stats, the per-turn latency, and, for
// phase 2, how the conversations of the killed replica moved.
package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/claudepool/claudepool"
)

const keyHeader = "X-Conversation-Key"

type options struct {
	lb, haproxyStats, kill, system string
	replicas                       []replica
	conversations, turns, conc     int
	killAfter, attempts            int
	timeout, inflight              time.Duration
}

type replica struct {
	name, url string
	pid       int
}

func main() {
	var o options
	var reps, pids string
	flag.StringVar(&o.lb, "lb", "http://127.0.0.1:18080", "the load balancer's URL")
	flag.StringVar(&o.haproxyStats, "haproxy-stats", "", "HAProxy's CSV statistics URL (optional)")
	flag.StringVar(&reps, "replicas", "", "name=URL,... of the replicas, for their /stats")
	flag.StringVar(&pids, "pids", "", "name=pid,... of the replicas, for -kill")
	flag.StringVar(&o.kill, "kill", "", "the replica to kill in phase 2 (empty: no phase 2)")
	flag.IntVar(&o.killAfter, "kill-after", 50, "phase 2 kills the replica after this many turns were answered")
	flag.DurationVar(&o.inflight, "inflight", 100*time.Millisecond, "how long after a turn was sent to the replica it is killed, the turn in flight")
	flag.StringVar(&o.system, "system", "You are a concise assistant.", "the conversations' system prompt")
	flag.IntVar(&o.conversations, "conversations", 30, "conversations per phase")
	flag.IntVar(&o.turns, "turns", 5, "turns per conversation")
	flag.IntVar(&o.conc, "concurrency", 2, "conversations in flight at once")
	flag.IntVar(&o.attempts, "attempts", 5, "tries of one turn before it counts as lost (the balancer retries first)")
	flag.DurationVar(&o.timeout, "timeout", 3*time.Minute, "longest one turn may take")
	flag.Parse()
	pidOf := map[string]int{}
	for _, kv := range splitList(pids) {
		name, v, _ := strings.Cut(kv, "=")
		pid, err := strconv.Atoi(v)
		if err != nil {
			fatalf("bad -pids entry %q", kv)
		}
		pidOf[name] = pid
	}
	for _, kv := range splitList(reps) {
		name, url, ok := strings.Cut(kv, "=")
		if !ok {
			fatalf("bad -replicas entry %q", kv)
		}
		o.replicas = append(o.replicas, replica{name: name, url: url, pid: pidOf[name]})
	}
	if len(o.replicas) == 0 {
		fatalf("-replicas is required")
	}
	d := &driver{o: o, client: &http.Client{Timeout: o.timeout}, down: map[string]bool{}}
	ok := d.phase(1, "")
	if o.kill != "" {
		ok = d.phase(2, o.kill) && ok
	}
	fmt.Println()
	for _, line := range d.summary {
		fmt.Println(line)
	}
	if !ok {
		fmt.Println("FAILED")
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "drive: "+format+"\n", args...)
	os.Exit(2)
}

type driver struct {
	o       options
	client  *http.Client
	mu      sync.Mutex
	down    map[string]bool // replicas killed
	summary []string        // a line per phase, printed at the end
}

// turn is the outcome of one turn.
type turn struct {
	conv, n   int // conversation, turn number from 1
	replica   string
	continued bool
	sent      time.Time
	latency   time.Duration
	attempts  int
	err       error
}

// reply is what a replica answers (see examples/cluster/replica).
type reply struct {
	Reply     string `json:"reply"`
	Replica   string `json:"replica"`
	Key       string `json:"key"`
	Continued bool   `json:"continued"`
}

// poolStats is the part of a replica's Stats JSON the report uses.
type poolStats struct {
	Conversations struct {
		Continued    int64 `json:"continued"`
		MissNotHeld  int64 `json:"miss_not_held"`
		MissSettings int64 `json:"miss_settings"`
	} `json:"conversations"`
	WarmAcquires int64 `json:"warm_acquires"`
	ColdAcquires int64 `json:"cold_acquires"`
	Reuses       int64 `json:"reuses"`
	Live         int   `json:"live"`
}

func (d *driver) phase(n int, kill string) bool {
	o := d.o
	live := d.liveReplicas()
	fmt.Printf("\n== phase %d: %d replicas, %d conversations x %d turns, %d at a time", n, len(live), o.conversations, o.turns, o.conc)
	if kill != "" {
		fmt.Printf(", %s killed mid-turn after %d answered turns", kill, o.killAfter)
	}
	fmt.Println()
	before := d.stats(live)
	hapBefore := d.haproxy()

	var (
		mu       sync.Mutex
		results  []turn
		answered int
		killedAt time.Time
		killNote string
	)
	// The kill comes while the replica answers a turn: once enough turns
	// were answered, as a conversation the replica served sends its next
	// turn there, the replica is killed -inflight later, mid-turn. The
	// balancer must then answer that turn elsewhere.
	var killOnce sync.Once
	var killWG sync.WaitGroup
	beforeSend := func(prev string) {
		mu.Lock()
		due := kill != "" && answered >= o.killAfter && prev == kill
		mu.Unlock()
		if due {
			killOnce.Do(func() {
				killWG.Add(1)
				go func() {
					defer killWG.Done()
					time.Sleep(o.inflight)
					at, note := d.killReplica(kill)
					mu.Lock()
					killedAt, killNote = at, note
					mu.Unlock()
				}()
			})
		}
	}
	onTurn := func(t turn) {
		mu.Lock()
		results = append(results, t)
		if t.err == nil {
			answered++
		}
		mu.Unlock()
	}
	convs := make(chan int)
	var wg sync.WaitGroup
	for range o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range convs {
				d.conversation(n, c, beforeSend, onTurn)
			}
		}()
	}
	for c := range o.conversations {
		convs <- c
	}
	close(convs)
	wg.Wait()
	killWG.Wait()

	after := d.stats(d.liveReplicas())
	lost := 0
	retried := 0
	for _, t := range results {
		if t.err != nil {
			lost++
			fmt.Printf("  LOST conversation %d turn %d after %d tries: %v\n", t.conv, t.n, t.attempts, t.err)
		}
		if t.attempts > 1 {
			retried++
		}
	}
	if killNote != "" {
		fmt.Println(" ", killNote)
	}
	fmt.Printf("  turns answered %d/%d, lost %d, retried by the client %d\n", answered, len(results), lost, retried)
	if hapAfter := d.haproxy(); hapAfter != nil {
		fmt.Printf("  HAProxy: %s\n", hapDiff(hapBefore, hapAfter))
	}

	// The continued rate from each replica's Stats: hits over
	// continuations (hits and misses; every turn after the first is one).
	fmt.Printf("  %-8s %6s %6s %12s %8s %10s\n", "replica", "convs", "turns", "continued", "misses", "hit rate")
	var hits, conts int64
	for _, r := range o.replicas {
		b, okb := before[r.name]
		a, oka := after[r.name]
		convs, turns := 0, 0
		seen := map[int]bool{}
		for _, t := range results {
			if t.replica == r.name && t.err == nil {
				turns++
				if !seen[t.conv] {
					seen[t.conv] = true
					convs++
				}
			}
		}
		if !okb {
			continue
		}
		if !oka {
			fmt.Printf("  %-8s %6d %6d %12s %8s %10s\n", r.name, convs, turns, "-", "-", "(killed: Stats gone with it)")
			continue
		}
		h := a.Conversations.Continued - b.Conversations.Continued
		m := a.Conversations.MissNotHeld + a.Conversations.MissSettings - b.Conversations.MissNotHeld - b.Conversations.MissSettings
		hits += h
		conts += h + m
		fmt.Printf("  %-8s %6d %6d %12d %8d %10s\n", r.name, convs, turns, h, m, pct(h, h+m))
	}
	fmt.Printf("  %-8s %6s %6s %12d %8d %10s   (turns 2-%d, from Stats)\n", "total", "", "", hits, conts-hits, pct(hits, conts), o.turns)

	// The same from the replies, which also covers a killed replica.
	var rh, rc int64
	for _, t := range results {
		if t.n > 1 && t.err == nil {
			rc++
			if t.continued {
				rh++
			}
		}
	}
	fmt.Printf("  continued turns 2-%d from the replies: %d/%d = %s\n", o.turns, rh, rc, pct(rh, rc))

	fmt.Printf("  latency per turn, p50 (p90):")
	for k := 1; k <= o.turns; k++ {
		var ls []time.Duration
		for _, t := range results {
			if t.n == k && t.err == nil {
				ls = append(ls, t.latency)
			}
		}
		fmt.Printf("  turn %d %s (%s)", k, quantile(ls, 0.5), quantile(ls, 0.9))
	}
	fmt.Println()

	good := lost == 0
	switch {
	case kill == "":
	case killedAt.IsZero():
		fmt.Printf("  FAIL: %s was not killed\n", kill)
		good = false
	default:
		rec := d.recovery(results, kill, killedAt)
		d.summary = append(d.summary, fmt.Sprintf("phase 2, %s killed mid-run: %d/%d turns answered, %d lost; continued turns 2-%d before the kill %s, turns that moved %s, every other turn after the kill %s",
			kill, answered, len(results), lost, o.turns, rec[0], rec[1], rec[2]))
	}
	if kill == "" {
		d.summary = append(d.summary, fmt.Sprintf("phase 1, %d replicas up: %d/%d turns answered, %d lost; continued rate of turns 2-%d %d/%d = %s (from Stats; 95%% wanted); latency p50 turn 1 %s, turns 2-%d %s",
			len(live), answered, len(results), lost, o.turns, hits, conts, pct(hits, conts), d.p50(results, 1, 1), o.turns, d.p50(results, 2, o.turns)))
		if conts == 0 || float64(hits) < 0.95*float64(conts) {
			fmt.Printf("  FAIL: continued rate below 95%%\n")
			good = false
		}
	}
	return good
}

// recovery splits phase 2's continuations: the turns that moved (the turn
// before was answered by the killed replica, this one by another: a miss by
// design, served from the rendered history), the others sent before the
// kill, and the others sent after it, whose hit rate shows the recovery.
func (d *driver) recovery(results []turn, kill string, at time.Time) [3]string {
	byConv := map[int][]turn{}
	for _, t := range results {
		byConv[t.conv] = append(byConv[t.conv], t)
	}
	var beforeH, beforeN, movedH, movedN, afterH, afterN int64
	var moved []string
	for _, ts := range byConv {
		slices.SortFunc(ts, func(a, b turn) int { return a.n - b.n })
		prev := ""
		for _, t := range ts {
			if t.err != nil {
				break
			}
			if t.n > 1 {
				switch {
				case prev == kill && t.replica != kill:
					when := "after"
					if t.sent.Before(at) {
						when = "in flight at"
					}
					moved = append(moved, fmt.Sprintf("turn %d %s the kill, answered by %s in %s", t.n, when, t.replica, t.latency.Round(time.Millisecond)))
					movedN++
					if t.continued {
						movedH++
					}
				case t.sent.Before(at):
					beforeN++
					if t.continued {
						beforeH++
					}
				default:
					afterN++
					if t.continued {
						afterH++
					}
				}
			}
			prev = t.replica
		}
	}
	fmt.Printf("  turns 2-%d before the kill: %d/%d continued = %s\n", d.o.turns, beforeH, beforeN, pct(beforeH, beforeN))
	fmt.Printf("  turns that moved from %s to another replica (served from the rendered history): %d/%d continued: %s\n", kill, movedH, movedN, strings.Join(moved, "; "))
	fmt.Printf("  every other turn 2-%d after the kill: %d/%d continued = %s (recovered)\n", d.o.turns, afterH, afterN, pct(afterH, afterN))
	return [3]string{fmt.Sprintf("%d/%d", beforeH, beforeN), fmt.Sprintf("%d/%d", movedH, movedN), fmt.Sprintf("%d/%d", afterH, afterN)}
}

// p50 is the median latency of the answered turns from turn lo to hi.
func (d *driver) p50(results []turn, lo, hi int) string {
	var ls []time.Duration
	for _, t := range results {
		if t.n >= lo && t.n <= hi && t.err == nil {
			ls = append(ls, t.latency)
		}
	}
	return quantile(ls, 0.5)
}

// conversation runs one conversation. It calls beforeSend before each
// turn after the first, with the replica that answered the turn before,
// and onTurn after each turn.
func (d *driver) conversation(phase, c int, beforeSend func(prev string), onTurn func(turn)) {
	o := d.o
	req := claudepool.Request{System: o.system}
	prev := ""
	for k := 1; k <= o.turns; k++ {
		text := fmt.Sprintf("Phase %d, conversation %d, turn %d: tell me something about the number %d.", phase, c+1, k, c*10+k)
		if k == 1 {
			text = fmt.Sprintf("Phase %d, conversation %d begins: my favourite number is %d.", phase, c+1, c+1)
		}
		req.Messages = append(req.Messages, claudepool.Message{Role: claudepool.RoleUser, Content: text})
		if k > 1 {
			beforeSend(prev)
		}
		t, answer := d.send(req)
		prev = t.replica
		t.conv, t.n = phase*1000+c, k
		onTurn(t)
		if t.err != nil {
			return // a lost turn ends its conversation
		}
		req.Messages = append(req.Messages, claudepool.Message{Role: claudepool.RoleAssistant, Content: answer})
	}
}

// send posts one turn through the balancer, with the conversation's key,
// and tries again on a transport error or a 5xx, as a client of any
// replicated service does. It returns the turn and the reply's text.
func (d *driver) send(req claudepool.Request) (turn, string) {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	body := struct {
		System   string `json:"system"`
		Messages []msg  `json:"messages"`
	}{System: req.System}
	for _, m := range req.Messages {
		body.Messages = append(body.Messages, msg{string(m.Role), m.Content})
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return turn{err: err}, ""
	}
	key := claudepool.ConversationKey(req)
	t := turn{sent: time.Now()}
	for t.attempts = 1; ; t.attempts++ {
		rep, err := d.post(payload, key)
		if err == nil && rep.Key != key {
			err = fmt.Errorf("the replica returned key %s, want %s", rep.Key, key)
		}
		if err == nil {
			t.latency = time.Since(t.sent)
			t.replica, t.continued = rep.Replica, rep.Continued
			return t, rep.Reply
		}
		if t.attempts >= d.o.attempts || errors.Is(err, errPermanent) {
			t.err = err
			return t, ""
		}
		time.Sleep(time.Duration(t.attempts) * 200 * time.Millisecond)
	}
}

var errPermanent = errors.New("not worth another try")

func (d *driver) post(payload []byte, key string) (reply, error) {
	var rep reply
	req, err := http.NewRequest(http.MethodPost, d.o.lb+"/chat", bytes.NewReader(payload))
	if err != nil {
		return rep, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(keyHeader, key)
	resp, err := d.client.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rep, err
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		if resp.StatusCode < 500 {
			err = fmt.Errorf("%w: %w", errPermanent, err)
		}
		return rep, err
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("%w: %w", errPermanent, err)
	}
	return rep, nil
}

func (d *driver) liveReplicas() []replica {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []replica
	for _, r := range d.o.replicas {
		if !d.down[r.name] {
			out = append(out, r)
		}
	}
	return out
}

// stats reads each replica's /stats.
func (d *driver) stats(reps []replica) map[string]poolStats {
	out := map[string]poolStats{}
	for _, r := range reps {
		resp, err := d.client.Get(r.url + "/stats")
		if err != nil {
			fmt.Printf("  stats of %s: %v\n", r.name, err)
			continue
		}
		var st poolStats
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			fmt.Printf("  stats of %s: %v\n", r.name, err)
			continue
		}
		out[r.name] = st
	}
	return out
}

// killReplica kills a replica with SIGKILL, as a crash would, and checks
// that its CLI processes die with it (the pool gives them a parent-death
// signal).
func (d *driver) killReplica(name string) (time.Time, string) {
	var r replica
	for _, x := range d.o.replicas {
		if x.name == name {
			r = x
		}
	}
	if r.pid == 0 {
		return time.Time{}, fmt.Sprintf("cannot kill %s: no pid given", name)
	}
	children := childrenOf(r.pid)
	d.mu.Lock()
	d.down[name] = true
	d.mu.Unlock()
	at := time.Now()
	if err := syscall.Kill(r.pid, syscall.SIGKILL); err != nil {
		return time.Time{}, fmt.Sprintf("kill %s (pid %d): %v", name, r.pid, err)
	}
	// Bounded: the parent-death signal is immediate, the reaping is not.
	left := children
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		left = slices.DeleteFunc(left, func(pid int) bool { return !alive(pid) })
	}
	note := fmt.Sprintf("killed %s (pid %d, SIGKILL) at %s; its %d CLI processes exited with it", name, r.pid,
		at.Format("15:04:05.000"), len(children))
	if len(left) > 0 {
		note = fmt.Sprintf("killed %s (pid %d); %d of its %d CLI processes still alive: %v", name, r.pid, len(left), len(children), left)
	}
	return at, note
}

// childrenOf lists a process's children from /proc (Linux).
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// haproxy reads the backend's server rows from HAProxy's CSV statistics:
// per server, its status and the retries and redispatches it caused.
func (d *driver) haproxy() map[string]map[string]string {
	if d.o.haproxyStats == "" {
		return nil
	}
	resp, err := d.client.Get(d.o.haproxyStats)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil
	}
	head := rows[0]
	head[0] = strings.TrimPrefix(head[0], "# ")
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, v := range row {
			if i < len(head) {
				m[head[i]] = v
			}
		}
		if m["pxname"] == "replicas" && m["svname"] != "FRONTEND" {
			out[m["svname"]] = m
		}
	}
	return out
}

func hapDiff(before, after map[string]map[string]string) string {
	num := func(m map[string]map[string]string, sv, f string) int64 {
		n, _ := strconv.ParseInt(m[sv][f], 10, 64)
		return n
	}
	var names []string
	for sv := range after {
		names = append(names, sv)
	}
	slices.Sort(names)
	var parts []string
	for _, sv := range names {
		parts = append(parts, fmt.Sprintf("%s %s requests %d retries %d redispatches %d", sv, after[sv]["status"],
			num(after, sv, "stot")-num(before, sv, "stot"), num(after, sv, "wretr")-num(before, sv, "wretr"),
			num(after, sv, "wredis")-num(before, sv, "wredis")))
	}
	return strings.Join(parts, "; ")
}

func pct(n, of int64) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func quantile(ls []time.Duration, q float64) string {
	if len(ls) == 0 {
		return "-"
	}
	slices.Sort(ls)
	return ls[min(len(ls)-1, int(q*float64(len(ls))))].Round(time.Millisecond).String()
}
