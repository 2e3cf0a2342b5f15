package servers

import (
	"slices"
	"strings"
	"testing"
)

func TestStartIPMISim(t *testing.T) {
	t.Parallel()
	s := StartIPMISim(t, IPMISimOptions{})
	if s.Power(t) {
		t.Fatal("simulator starts powered on without PoweredOn")
	}
	if out := s.Ipmitool(t, "power", "on"); !strings.Contains(out, "Up/On") {
		t.Fatalf("power on: %q", out)
	}
	if !s.Power(t) {
		t.Fatalf("chassis state off after power on; commands %q", s.Commands(t))
	}
	if out := s.Ipmitool(t, "power", "status"); !strings.Contains(out, "Chassis Power is on") {
		t.Fatalf("power status: %q", out)
	}
	s.Ipmitool(t, "chassis", "bootdev", "pxe")
	if got := s.NextBoot(t); got != "pxe" {
		t.Fatalf("NextBoot = %q after bootdev pxe", got)
	}
	if want := []string{"set power 1", "set boot pxe"}; !slices.Equal(s.Sets(t), want) {
		t.Fatalf("Sets = %q, want %q", s.Sets(t), want)
	}

	on := StartIPMISim(t, IPMISimOptions{PoweredOn: true, Username: "root", Password: "calvin"})
	if !on.Power(t) || on.Addr() == s.Addr() {
		t.Fatalf("second simulator: power %v, addr %s (first %s)", on.Power(t), on.Addr(), s.Addr())
	}
}
