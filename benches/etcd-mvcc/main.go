// etcd-mvcc-bench: etcd 3.4's MVCC store, in process, under the workload of
// `cairn-bench mvcc-put` — the reference side of that comparison.
//
// It uses etcd only as a library (Debian's golang-etcd-server-dev sources):
// the store is set up as etcd's `tools/benchmark mvcc` sets it up (a bbolt
// backend from backend.DefaultBackendConfig with the given batch interval and
// limit, mvcc.NewStore with a FakeLessor and no consistent-index getter), and
// the puts are issued as its `mvcc put` issues them (pre-generated random keys
// and values, one goroutine calling Put). On top of that tool's figure it
// measures what cairn-bench measures: the final commit, single-key ranges at
// head and at an old revision, and the time to reopen the store (bbolt open +
// key-index rebuild in mvcc.NewStore).
//
// Build (Go from Debian's golang-go, etcd from golang-etcd-server-dev, in
// GOPATH mode): see README.md beside this file.
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	mrand "math/rand"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.etcd.io/etcd/lease"
	"go.etcd.io/etcd/mvcc"
	"go.etcd.io/etcd/mvcc/backend"
	"go.uber.org/zap"
)

type kvStore = mvcc.KV

func randomSlices(size, n int) [][]byte {
	buf := make([]byte, size*n)
	if _, err := rand.Read(buf); err != nil {
		panic(err)
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return out
}

func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1e3 // µs
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

type latency struct {
	MeanUs float64 `json:"mean_us"`
	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
}

func summarize(d []time.Duration) latency {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return latency{
		MeanUs: float64(sum) / float64(len(d)) / 1e3,
		P50Us:  quantile(d, 0.5),
		P99Us:  quantile(d, 0.99),
		P999Us: quantile(d, 0.999),
		MaxUs:  float64(d[len(d)-1]) / 1e3,
	}
}

type rangeResult struct {
	Ops      int     `json:"ops"`
	OpsPerS  float64 `json:"ops_per_s"`
	Revision int64   `json:"revision"`
	latency
}

// ranges reads single random keys among keys at rev (0: head), ops times or
// for at most limit, whichever ends first.
func ranges(s kvStore, keys [][]byte, rev int64, ops int, limit time.Duration, seed int64) rangeResult {
	rng := mrand.New(mrand.NewSource(seed))
	lat := make([]time.Duration, 0, ops)
	start := time.Now()
	for i := 0; i < ops && (i%256 != 0 || time.Since(start) < limit); i++ {
		k := keys[rng.Intn(len(keys))]
		t := time.Now()
		r, err := s.Range(k, nil, mvcc.RangeOptions{Rev: rev})
		lat = append(lat, time.Since(t))
		if err != nil || len(r.KVs) != 1 {
			fmt.Fprintf(os.Stderr, "range %x at %d: %v, %d kvs\n", k, rev, err, len(r.KVs))
			os.Exit(1)
		}
	}
	secs := time.Since(start).Seconds()
	return rangeResult{Ops: len(lat), OpsPerS: float64(len(lat)) / secs, Revision: rev, latency: summarize(lat)}
}

func main() {
	total := flag.Int("total", 1000000, "puts")
	keySize := flag.Int("key-size", 16, "bytes per key (random over the whole key space)")
	valueSize := flag.Int("value-size", 256, "bytes per value")
	batchInterval := flag.Int("batch-interval", 100, "backend batch interval (ms)")
	batchLimit := flag.Int("batch-limit", 10000, "backend batch limit (operations)")
	rangeOps := flag.Int("range-ops", 200000, "single-key ranges per range measurement")
	rangeSeconds := flag.Float64("range-seconds", 5, "longest time per range measurement")
	oldFraction := flag.Float64("old-fraction", 0.1, "the old revision is the one after this share of the puts")
	reopenRounds := flag.Int("reopen-rounds", 3, "times the store is closed and reopened")
	dir := flag.String("dir", "", "directory for the database file (default: the system temp dir)")
	asJSON := flag.Bool("json", false, "print one JSON object")
	toolReport := flag.Bool("tool-report", false,
		"hand every put's timing through two buffered channels and goroutines, as etcd's benchmark tool's weighted report does, instead of storing it in a slice")
	flag.Parse()

	tmp, err := os.MkdirTemp(*dir, "etcd-mvcc-bench")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "db")
	bcfg := backend.DefaultBackendConfig()
	bcfg.Path = path
	bcfg.BatchInterval = time.Duration(*batchInterval) * time.Millisecond
	bcfg.BatchLimit = *batchLimit
	lg := zap.NewNop()
	open := func() (backend.Backend, kvStore) {
		be := backend.New(bcfg)
		return be, mvcc.NewStore(lg, be, &lease.FakeLessor{}, nil, mvcc.StoreConfig{})
	}

	keys := randomSlices(*keySize, *total)
	vals := randomSlices(*valueSize, *total)
	be, s := open()

	// Puts: one goroutine, as etcd's applier (and its benchmark tool) does.
	oldN := int(*oldFraction * float64(*total))
	var oldRev int64
	lat := make([]time.Duration, *total)
	type result struct{ start, end time.Time }
	var results chan result
	var collected chan struct{}
	if *toolReport {
		// The tool's shape: put loop -> chan(16) -> goroutine -> chan(16) -> collector.
		results, collected = make(chan result, 16), make(chan struct{})
		forward := make(chan result, 16)
		go func() {
			for r := range results {
				forward <- r
			}
			close(forward)
		}()
		go func() {
			i := 0
			for r := range forward {
				lat[i] = r.end.Sub(r.start)
				i++
			}
			close(collected)
		}()
	}
	start := time.Now()
	for i := 0; i < *total; i++ {
		t := time.Now()
		rev := s.Put(keys[i], vals[i], lease.NoLease)
		if results != nil {
			results <- result{t, time.Now()}
		} else {
			lat[i] = time.Since(t)
		}
		if i+1 == oldN {
			oldRev = rev
		}
	}
	if results != nil {
		close(results)
		<-collected
	}
	putSecs := time.Since(start).Seconds()
	t := time.Now()
	be.ForceCommit()
	flushSecs := time.Since(t).Seconds()
	putLat := summarize(lat)
	lat = nil

	headRev := s.Rev()
	rlimit := time.Duration(*rangeSeconds * float64(time.Second))
	head := ranges(s, keys, 0, *rangeOps, rlimit, 1)
	old := ranges(s, keys[:oldN], oldRev, *rangeOps, rlimit, 2)

	// etcd 3.4 copies the backend's whole read buffer (each bucket's buffer
	// at its high-water length, ~13,000 entries after 10,000-op batches) into
	// every read transaction. A bucket's buffer is dropped only at a commit
	// after which nothing of it is buffered — a commit that wrote nothing to
	// it — which under steady puts does not happen (the backend's own timer
	// commits only when something is pending). Two forced, empty commits drop
	// it here; read again with the buffer empty, etcd's best case.
	be.ForceCommit()
	be.ForceCommit()
	headSettled := ranges(s, keys, 0, *rangeOps, rlimit, 3)
	oldSettled := ranges(s, keys[:oldN], oldRev, *rangeOps, rlimit, 4)

	// Reopen: bbolt open plus the key-index rebuild in mvcc.NewStore.
	s.Close()
	be.Close()
	var reopen []float64
	for r := 0; r < *reopenRounds; r++ {
		t := time.Now()
		be2, s2 := open()
		reopen = append(reopen, time.Since(t).Seconds()*1e3)
		if got := s2.Rev(); got != int64(*total)+1 {
			fmt.Fprintf(os.Stderr, "reopened at revision %d, want %d\n", got, *total+1)
			os.Exit(1)
		}
		s2.Close()
		be2.Close()
	}
	st, _ := os.Stat(path)

	out := map[string]interface{}{
		"engine":                "etcd-3.4-mvcc",
		"tool_report":           *toolReport,
		"puts":                  *total,
		"key_size":              *keySize,
		"value_size":            *valueSize,
		"batch_interval_ms":     *batchInterval,
		"batch_limit":           *batchLimit,
		"put_seconds":           putSecs,
		"puts_per_s":            float64(*total) / putSecs,
		"flush_seconds":         flushSecs,
		"puts_per_s_with_flush": float64(*total) / (putSecs + flushSecs),
		"put_latency":           putLat,
		"head_revision":         headRev,
		"range_head":            head,
		"range_old":             old,
		"range_head_settled":    headSettled,
		"range_old_settled":     oldSettled,
		"reopen_ms":             reopen,
		"reopen_ms_median":      median(reopen),
		"db_file_bytes":         st.Size(),
	}
	if *asJSON {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("etcd 3.4 mvcc: %d puts of %d-byte random keys, %d-byte values, batch %d ms / %d ops\n",
		*total, *keySize, *valueSize, *batchInterval, *batchLimit)
	fmt.Printf("puts               %.3f s, %.0f puts/s\n", putSecs, float64(*total)/putSecs)
	fmt.Printf("final commit       %.1f ms; with it %.0f puts/s\n", flushSecs*1e3, float64(*total)/(putSecs+flushSecs))
	fmt.Printf("put latency        mean %.2f us, p50 %.2f us, p99 %.2f us, p99.9 %.2f us, max %.0f us\n",
		putLat.MeanUs, putLat.P50Us, putLat.P99Us, putLat.P999Us, putLat.MaxUs)
	fmt.Printf("range at head      %.0f ops/s (rev %d), p50 %.2f us, p99 %.2f us\n", head.OpsPerS, headRev, head.P50Us, head.P99Us)
	fmt.Printf("range at old rev   %.0f ops/s (rev %d), p50 %.2f us, p99 %.2f us\n", old.OpsPerS, oldRev, old.P50Us, old.P99Us)
	fmt.Printf("  read buffer empty: head %.0f ops/s, p50 %.2f us; old rev %.0f ops/s, p50 %.2f us\n",
		headSettled.OpsPerS, headSettled.P50Us, oldSettled.OpsPerS, oldSettled.P50Us)
	fmt.Printf("reopen (%d keys)   median %.0f ms of %v; file %d MiB\n", *total, median(reopen), reopen, st.Size()>>20)
}
