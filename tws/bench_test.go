package tws

import (
	"runtime"
	"strconv"
	"testing"
)

// BenchmarkDecodeHistoricalData decodes a 2000-bar historicalData message,
// IB's practical maximum per request. Reported: bars/s and allocs/bar.
func BenchmarkDecodeHistoricalData(b *testing.B) {
	const n = 2000
	m := &HistoricalData{ReqID: 42, Start: "20240102 09:30:00 US/Eastern", End: "20240110 16:00:00 US/Eastern"}
	for i := range n {
		p := 180 + float64(i%500)/100
		m.Bars = append(m.Bars, Bar{Time: strconv.Itoa(1704205800 + 60*i), Open: p, High: p + 0.37, Low: p - 0.21,
			Close: p + 0.05, Volume: float64(1000 + i), WAP: p + 0.02, Count: 100 + i%50})
	}
	frame, err := Encode(m, MaxServerVersion)
	if err != nil {
		b.Fatal(err)
	}
	payload := frame[4:]
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		msg, err := DecodeIncoming(payload, MaxServerVersion)
		if err != nil || len(msg.(*HistoricalData).Bars) != n {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	bars := float64(n) * float64(b.N)
	b.ReportMetric(bars/b.Elapsed().Seconds(), "bars/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/bars, "allocs/bar")
}
