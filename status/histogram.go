package status

import "sort"

// Histogram counts observations in buckets, the way Prometheus does, so the
// producers need no metrics library and the metrics are a view of the
// snapshot.
type Histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds, ascending
	Counts []uint64  `json:"counts"` // per bucket, not cumulative; one more than Bounds (+Inf)
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"`
}

// Bucket bounds in seconds. A pass is a list call and a render (tens of
// milliseconds) plus, with a change, nginx -t (about 0.2 s) and a signal;
// an order is 0.1 s (Pebble, always valid) to a minute (several names).
var (
	PassBounds  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	OrderBounds = []float64{0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
)

// NewHistogram returns an empty histogram with the given bounds.
func NewHistogram(bounds []float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

// Observe adds one value.
func (h *Histogram) Observe(v float64) {
	if len(h.Counts) != len(h.Bounds)+1 {
		h.Counts = make([]uint64, len(h.Bounds)+1)
	}
	h.Counts[sort.SearchFloat64s(h.Bounds, v)]++
	h.Sum += v
	h.Count++
}

// Cumulative returns the count of observations <= each bound, as
// Prometheus' const histograms want them.
func (h Histogram) Cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			n += h.Counts[i]
		}
		out[b] = n
	}
	return out
}

// clone copies the slices, so a snapshot never aliases a producer's state.
func (h Histogram) clone() Histogram {
	h.Bounds = append([]float64(nil), h.Bounds...)
	h.Counts = append([]uint64(nil), h.Counts...)
	return h
}
