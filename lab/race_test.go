//go:build race

package lab

// raceEnabled: the race detector slows the lab some tenfold.
const raceEnabled = true
