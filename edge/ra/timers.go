package ra

import "time"

// RFC 4861 §10 router constants.
const (
	maxInitialAdvertInterval = 16 * time.Second
	maxInitialAdverts        = 3
	minDelayBetweenRAs       = 3 * time.Second        // between multicast advertisements
	maxRADelay               = 500 * time.Millisecond // before a solicited advertisement

	// defaultReplyDelay is our spread of the random delay before a solicited
	// advertisement. RFC 4861 §6.2.6 bounds the delay (MAX_RA_DELAY_TIME)
	// and leaves its spread to the advertiser; every iPXE start waits for this
	// answer before it fetches anything, and dnsmasq answers at once. 40 ms
	// still spreads the answers of several advertisers on one segment over
	// hundreds of frame times, and multicast answers keep their 3 s spacing.
	defaultReplyDelay = 40 * time.Millisecond

	// §6.2.1 bounds and default of MaxRtrAdvInterval.
	minMaxInterval     = 4 * time.Second
	maxMaxInterval     = 1800 * time.Second
	defaultMaxInterval = 600 * time.Second
)

// Intervals are the advertisement timers of RFC 4861 §6.2.1 and §6.2.4.
type Intervals struct {
	// Max is MaxRtrAdvInterval, the longest time between unsolicited
	// advertisements: default 600 s, held within 4–1800 s.
	Max time.Duration
	// Min is MinRtrAdvInterval: default Max/3, held within 3 s–0.75·Max.
	Min time.Duration
	// ReplyDelay is the longest random delay before answering a
	// solicitation: default 40 ms, at most 500 ms (MAX_RA_DELAY_TIME; the
	// delay keeps several routers' answers from colliding). Negative: none,
	// for tests only.
	ReplyDelay time.Duration
}

// bounded fills in defaults and holds every timer within RFC 4861's range.
func (iv Intervals) bounded() Intervals {
	if iv.Max == 0 {
		iv.Max = defaultMaxInterval
	}
	iv.Max = min(max(iv.Max, minMaxInterval), maxMaxInterval)
	if iv.Min == 0 {
		iv.Min = iv.Max / 3
	}
	iv.Min = min(max(iv.Min, minDelayBetweenRAs), iv.Max*3/4)
	if iv.ReplyDelay == 0 {
		iv.ReplyDelay = defaultReplyDelay
	}
	iv.ReplyDelay = min(iv.ReplyDelay, maxRADelay)
	return iv
}

// next is the wait before the next unsolicited advertisement when sent
// have been sent since start: uniformly random in [Min, Max], and at most
// MAX_INITIAL_RTR_ADVERT_INTERVAL for the first ones, so machines that
// were already waiting hear from a new edge soon (§6.2.4). rnd returns a
// uniform value in [0, n).
func (iv Intervals) next(sent int, rnd func(n int64) int64) time.Duration {
	d := iv.Min + time.Duration(rnd(int64(iv.Max-iv.Min)+1))
	if sent < maxInitialAdverts {
		d = min(d, maxInitialAdvertInterval)
	}
	return d
}

// replyDelay is the random delay before a solicited advertisement.
func (iv Intervals) replyDelay(rnd func(n int64) int64) time.Duration {
	if iv.ReplyDelay < 0 {
		return 0
	}
	return time.Duration(rnd(int64(iv.ReplyDelay) + 1))
}
