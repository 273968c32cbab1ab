package prom

// Exported for the tests of package prom_test.
var (
	NewCollectorOf = newCollector
	StatsMetrics   = statsMetrics
)
