package status

import (
	"testing"
	"time"
)

func TestAStandbyIsHealthyAndALeaderStartsFromAPass(t *testing.T) {
	b := NewBoard("v", nil)
	b.Standby(true)
	if s := b.Snapshot(time.Now()); !s.Healthy || !s.Standby {
		t.Fatalf("standby: healthy=%v standby=%v (%s); want healthy, so Swarm keeps the replica that can take over", s.Healthy, s.Standby, s.HealthReason)
	}
	b.Standby(false)
	if s := b.Snapshot(time.Now()); s.Healthy || s.Standby {
		t.Fatalf("leader before its first pass: healthy=%v standby=%v; want unhealthy until a pass finishes", s.Healthy, s.Standby)
	}
}
