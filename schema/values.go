package schema

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseDuration reads 90d, 12h, 1w2d, 30m, 45s and sums of them.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) {
			return 0, fmt.Errorf("duration %q: want a number then one of w, d, h, m, s", s)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("duration %q: %w", s, err)
		}
		var unit time.Duration
		switch rest[i] {
		case 'w':
			unit = 7 * 24 * time.Hour
		case 'd':
			unit = 24 * time.Hour
		case 'h':
			unit = time.Hour
		case 'm':
			unit = time.Minute
		case 's':
			unit = time.Second
		default:
			return 0, fmt.Errorf("duration %q: unknown unit %q", s, rest[i])
		}
		if n > int64(math.MaxInt64-total)/int64(unit) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	return total, nil
}

// UnmarshalYAML reads a duration such as 90d.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration in Go's notation (2160h0m0s).
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// IsZero lets omitempty drop an unset duration.
func (d Duration) IsZero() bool { return d.Duration == 0 }

// ParseIntOrPercent reads 3 or "25%".
func ParseIntOrPercent(s string) (IntOrPercent, error) {
	pct := strings.HasSuffix(s, "%")
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || n < 0 || (pct && n > 100) {
		return IntOrPercent{}, fmt.Errorf("%q: want a count or a percentage from 0%% to 100%%", s)
	}
	return IntOrPercent{Value: n, Percent: pct}, nil
}

// UnmarshalYAML reads 3 or "25%".
func (p *IntOrPercent) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseIntOrPercent(n.Value)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// String writes 3 or 25%.
func (p IntOrPercent) String() string {
	if p.Percent {
		return strconv.Itoa(p.Value) + "%"
	}
	return strconv.Itoa(p.Value)
}
