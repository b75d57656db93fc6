package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fleetboot/fleetboot/coordinator/kvleader"
	"github.com/fleetboot/fleetboot/proto"
)

// Keys of the identities bucket (proto.BucketIdentities). Every write is a
// compare-and-set, so coordinators enrolling or revoking at once agree:
//
//	key.<user public key>  → the Identity (JSON); never deleted, so a public
//	                         key is accepted once, ever; revocation sets Revoked
//	name.<edge|user>.<name> → the Identity holding the name (JSON);
//	                         deleted on revocation, so the name can be reused
//	account                → the newest signed fleetboot account JWT (its
//	                         revocations); each replaces the last only with a
//	                         later iat, and every coordinator pushes it
const (
	regKeyPrefix  = "key."
	regNamePrefix = "name."
	regAccountKey = "account"
)

// lookupTimeout bounds the direct read of an identity the index has not
// seen yet (enrolled a moment ago through another coordinator).
const lookupTimeout = 3 * time.Second

// registry is the cluster's identity registry: the bucket, an index of it
// fed by a watch (every coordinator knows the identities the others
// enrolled), and the account JWT pushes.
type registry struct {
	kv   jetstream.KeyValue
	nc   *nats.Conn // leader reads (get)
	acct *ClusterAccount
	log  *slog.Logger

	mu      sync.Mutex
	ids     map[string]indexed // by public key
	account string             // newest account JWT in the bucket
	accRev  uint64
	push    func(ctx context.Context, tok string) error // nil until attached

	changed chan struct{} // cap 1: the account JWT changed, push it
	pushing sync.Once     // starts pusher (attach may be retried)
	w       jetstream.KeyWatcher
	ctx     context.Context // done once closed
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// entry is one key's latest value read from the stream leader.
type entry struct {
	key   string
	value []byte
	rev   uint64
}

func (e entry) Key() string      { return e.key }
func (e entry) Value() []byte    { return e.value }
func (e entry) Revision() uint64 { return e.rev }

// get reads the latest value of key from the bucket's stream leader
// (jetstream.ErrKeyNotFound if it has none, or was deleted). A KV Get is a
// direct get any replica may answer, and a replica may not have applied yet
// what another coordinator wrote a moment ago (enrolled, revoked): the
// registry's answers must not rest on such a read.
func (r *registry) get(ctx context.Context, key string) (entry, error) {
	e, err := kvleader.Get(ctx, r.nc, proto.BucketIdentities, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return entry{}, err
		}
		return entry{}, fmt.Errorf("auth: %w", err)
	}
	return entry{key: key, value: e.Value, rev: e.Revision}, nil
}

type indexed struct {
	id  Identity
	rev uint64
}

// openRegistry creates (or binds to) the bucket and returns once the index
// holds every identity the bucket had.
func openRegistry(ctx context.Context, js jetstream.JetStream, replicas int, acct *ClusterAccount, log *slog.Logger) (*registry, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, proto.BucketConfig(proto.BucketIdentities, replicas))
	if err != nil {
		return nil, fmt.Errorf("auth: create KV bucket %s: %w", proto.BucketIdentities, err)
	}
	if err := limitConsumers(ctx, js, "KV_"+proto.BucketIdentities); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("auth: watch %s: %w", proto.BucketIdentities, err)
	}
	r := &registry{kv: kv, nc: js.Conn(), acct: acct, log: log, ids: map[string]indexed{}, changed: make(chan struct{}, 1), w: w, ctx: wctx, cancel: cancel}
	ready := make(chan struct{})
	r.wg.Add(1)
	go r.watch(ready)
	select {
	case <-ready:
		return r, nil
	case <-ctx.Done():
		r.close()
		return nil, fmt.Errorf("auth: read %s: %w", proto.BucketIdentities, ctx.Err())
	}
}

// limitConsumers gives the bucket's stream the contract's consumer limits
// (see proto.ConsumerLimits), which a KV config cannot carry.
func limitConsumers(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("auth: stream %s: %w", stream, err)
	}
	sc := st.CachedInfo().Config
	if sc.ConsumerLimits == proto.ConsumerLimits() {
		return nil
	}
	sc.ConsumerLimits = proto.ConsumerLimits()
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("auth: limit the consumers of %s: %w", stream, err)
	}
	return nil
}

func (r *registry) watch(ready chan struct{}) {
	defer r.wg.Done()
	initial := true
	for e := range r.w.Updates() {
		if e == nil {
			if initial {
				initial = false
				close(ready)
			}
			continue
		}
		r.apply(e)
	}
}

// apply feeds the index from one bucket entry.
func (r *registry) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	switch k := e.Key(); {
	case strings.HasPrefix(k, regKeyPrefix):
		var id Identity
		if err := json.Unmarshal(e.Value(), &id); err != nil {
			r.log.Error("unreadable identity in the registry", "key", k, "err", err)
			return
		}
		r.remember(id, e.Revision())
	case k == regAccountKey:
		r.mu.Lock()
		newer := e.Revision() > r.accRev
		if newer {
			r.account, r.accRev = string(e.Value()), e.Revision()
		}
		r.mu.Unlock()
		if newer {
			r.kick()
		}
	}
}

// remember indexes id unless the index holds a later revision of it (the
// watch and a direct read may deliver the same key in either order).
func (r *registry) remember(id Identity, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.ids[id.PublicKey]; !ok || old.rev < rev {
		r.ids[id.PublicKey] = indexed{id, rev}
	}
}

func (r *registry) kick() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// lookup returns the identity of a public key, revoked or not, reading the
// bucket when the index has not seen it yet.
func (r *registry) lookup(pub string) (Identity, bool) {
	r.mu.Lock()
	in, ok := r.ids[pub]
	r.mu.Unlock()
	if ok {
		return in.id, true
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return Identity{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	e, err := r.get(ctx, regKeyPrefix+pub)
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			r.log.Warn("identity registry read failed", "key", pub, "err", err)
		}
		return Identity{}, false
	}
	var id Identity
	if err := json.Unmarshal(e.Value(), &id); err != nil {
		return Identity{}, false
	}
	r.remember(id, e.Revision())
	return id, true
}

func (r *registry) list() []Identity {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Identity, 0, len(r.ids))
	for _, in := range r.ids {
		out = append(out, in.id)
	}
	return out
}

func nameKey(name string, edge bool) string {
	if edge {
		return regNamePrefix + "edge." + name
	}
	return regNamePrefix + "user." + name
}

// add records a new identity: first its name (so two coordinators never
// issue one name twice), then its key (so no public key is accepted
// twice). A failed second step gives the name back.
func (r *registry) add(ctx context.Context, id Identity) error {
	data, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	nk := nameKey(id.Name, id.Role == RoleEdge)
	nameRev, err := r.kv.Create(ctx, nk, data)
	if isConflict(err) {
		return fmt.Errorf("%w: %s %q is already enrolled; revoke it first", errConflict, kindOf(id.Role == RoleEdge), id.Name)
	}
	if err != nil {
		return fmt.Errorf("auth: registry: %w", err)
	}
	keyRev, err := r.kv.Create(ctx, regKeyPrefix+id.PublicKey, data)
	if err != nil {
		if derr := r.kv.Delete(ctx, nk, jetstream.LastRevision(nameRev)); derr != nil {
			r.log.Error("enrolment failed and its name stays taken; revoke it to free it", "name", id.Name, "err", derr)
		}
		if isConflict(err) {
			return fmt.Errorf("%w: this public key was enrolled before; make a new key pair", errConflict)
		}
		return fmt.Errorf("auth: registry: %w", err)
	}
	r.remember(id, keyRev)
	return nil
}

// revoke marks the live credential of a name revoked at at and frees the
// name. A name whose enrolment never completed (its coordinator stopped
// between the two writes of add) is freed and nothing is returned.
func (r *registry) revoke(ctx context.Context, name string, edge bool, at time.Time) ([]Identity, error) {
	nk := nameKey(name, edge)
	notFound := fmt.Errorf("%s %q: %w (never enrolled, or revoked already)", kindOf(edge), name, errNotFound)
	ne, err := r.get(ctx, nk)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("auth: registry: %w", err)
	}
	holder, err := decodeIdentity(ne)
	if err != nil {
		return nil, err
	}
	var done []Identity
	ke, err := r.get(ctx, regKeyPrefix+holder.PublicKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("auth: registry: %w", err)
	default:
		id, err := decodeIdentity(ke)
		if err != nil {
			return nil, err
		}
		if id.Revoked != nil {
			return nil, notFound
		}
		id.Revoked = &at
		data, err := json.Marshal(id)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		rev, err := r.kv.Update(ctx, ke.Key(), data, ke.Revision())
		if isConflict(err) {
			return nil, notFound // another coordinator revoked it just now
		}
		if err != nil {
			return nil, fmt.Errorf("auth: revoke %s %q: nothing revoked: %w", kindOf(edge), name, err)
		}
		r.remember(id, rev)
		done = append(done, id)
	}
	if err := r.kv.Delete(ctx, nk, jetstream.LastRevision(ne.Revision())); err != nil && !isConflict(err) {
		// Revoked all the same; the name stays taken until revoked again.
		r.log.Warn("credential revoked but its name not freed; revoke it again to reuse the name", "name", name, "err", err)
	}
	return done, nil
}

// publishAccount signs the account with every revocation the bucket's
// newest account JWT and the index hold, issued after that JWT, and stores
// it in its place (compare-and-set: of two coordinators publishing at once,
// the second starts again from the first's JWT, so neither loses a
// revocation). It returns the JWT stored.
func (r *registry) publishAccount(ctx context.Context) (string, error) {
	for range 20 {
		e, err := r.get(ctx, regAccountKey)
		revoked := map[string]time.Time{}
		var rev uint64
		var after int64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return "", fmt.Errorf("auth: registry: %w", err)
		default:
			if revoked, after, err = r.acct.revocations(string(e.Value())); err != nil {
				return "", err
			}
			rev = e.Revision()
		}
		r.addRevocations(revoked)
		tok, err := r.acct.AccountJWT(revoked, after)
		if err != nil {
			return "", err
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = r.kv.Create(ctx, regAccountKey, []byte(tok))
		} else {
			newRev, err = r.kv.Update(ctx, regAccountKey, []byte(tok), rev)
		}
		if isConflict(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("auth: store the account JWT: %w", err)
		}
		r.mu.Lock()
		if newRev > r.accRev {
			r.account, r.accRev = tok, newRev
		}
		r.mu.Unlock()
		return tok, nil
	}
	return "", fmt.Errorf("auth: store the account JWT: other coordinators kept replacing it")
}

// addRevocations adds the index's revocations to revoked (keeping the
// times already there) and says whether any was missing.
func (r *registry) addRevocations(revoked map[string]time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	missing := false
	for pub, in := range r.ids {
		if in.id.Revoked == nil {
			continue
		}
		if _, ok := revoked[pub]; !ok {
			revoked[pub] = *in.id.Revoked
			missing = true
		}
	}
	return missing
}

// attach starts pushing the bucket's account JWT through sys on every
// change, first publishing one if a revocation is recorded that the newest
// JWT lacks (a coordinator stopped between the two) or if the newest JWT
// (the preloaded one when none is stored) has another definition of the
// account than this version's (its limits changed), then pushing the
// current one, so a node's resolver that missed it gets it again.
func (r *registry) attach(ctx context.Context, sys *nats.Conn) error {
	r.mu.Lock()
	r.push = func(ctx context.Context, tok string) error { return PushAccount(ctx, sys, tok) }
	cur := r.account
	r.mu.Unlock()
	revoked := map[string]time.Time{}
	if cur != "" {
		var err error
		if revoked, _, err = r.acct.revocations(cur); err != nil {
			return err
		}
	}
	current, err := r.acct.upToDate(cur)
	if err != nil {
		return err
	}
	if missing := r.addRevocations(revoked); missing || !current {
		if !current {
			r.log.Info("the cluster's fleetboot account differs from this version's (limits, API import, signing keys): signing and pushing it")
		}
		if _, err := r.publishAccount(ctx); err != nil {
			return err
		}
	}
	if err := r.pushCurrent(ctx); err != nil {
		return err
	}
	r.pushing.Do(func() {
		r.wg.Add(1)
		go r.pusher()
	})
	return nil
}

// pushCurrent pushes the newest account JWT the index has seen, if any.
func (r *registry) pushCurrent(ctx context.Context) error {
	r.mu.Lock()
	tok, push := r.account, r.push
	r.mu.Unlock()
	if tok == "" || push == nil {
		return nil // the preloaded JWT of resolver.conf is current
	}
	return push(ctx, tok)
}

// pusher pushes every new account JWT, whichever coordinator stored it, and
// retries a failed push.
func (r *registry) pusher() {
	defer r.wg.Done()
	var retry <-chan time.Time
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.changed:
		case <-retry:
		}
		retry = nil
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.pushCurrent(ctx)
		cancel()
		if err != nil {
			r.log.Warn("account update not pushed to the cluster; retrying", "err", err)
			retry = time.After(5 * time.Second)
		}
	}
}

// close stops the watch and the pushes.
func (r *registry) close() {
	r.cancel()
	_ = r.w.Stop()
	r.wg.Wait()
}

func decodeIdentity(e interface {
	Key() string
	Value() []byte
}) (Identity, error) {
	var id Identity
	if err := json.Unmarshal(e.Value(), &id); err != nil {
		return id, fmt.Errorf("auth: registry: %s: %w", e.Key(), err)
	}
	return id, nil
}

// holder returns the identity holding a name now.
func (r *registry) holder(ctx context.Context, name string, edge bool) (Identity, bool) {
	e, err := r.get(ctx, nameKey(name, edge))
	if err != nil {
		return Identity{}, false
	}
	id, err := decodeIdentity(e)
	return id, err == nil
}

// isConflict tells whether a KV write lost a compare-and-set.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func kindOf(edge bool) string {
	if edge {
		return "edge"
	}
	return "user"
}
