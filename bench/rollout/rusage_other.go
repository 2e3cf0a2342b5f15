//go:build !unix

package main

import "time"

// cpuTime is not measured here.
func cpuTime() time.Duration { return 0 }

// peakRSS is not measured here.
func peakRSS() int64 { return 0 }
