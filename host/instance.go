package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/indexgate/indexgate/abi"
)

// instance is one instantiated module and everything needed to call it
// without allocating: cached function handles, one reused call stack, a
// reused encode buffer and verdict slice, and the guest input buffer's
// address. It is not safe for concurrent use (neither is api.Function); the
// type's lock serializes every call.
type instance struct {
	c   *compiled
	mod api.Module
	mem api.Memory
	fns [numFns]api.Function
	// stack holds the one parameter and the one result of every export.
	stack [1]uint64
	// bufPtr and bufLen describe the input buffer ig_buffer handed out. It
	// stays valid until the next ig_buffer call (docs/abi.md), so it is
	// requested again only when an input does not fit.
	bufPtr, bufLen uint32
	in             []byte
	verdicts       []abi.Verdict
}

// minInput is the smallest input buffer requested: every input but a large
// header batch fits, so most modules get exactly one ig_buffer call.
const minInput = 4 << 10

// violation is a module breaking the ABI contract (a bad pointer, a wrong
// verdict count) rather than trapping.
type violation struct{ msg string }

func (v *violation) Error() string { return "ABI violation: " + v.msg }

func violationf(format string, args ...any) error {
	return &violation{msg: fmt.Sprintf(format, args...)}
}

// guestError is an error result (r < 0) with the module's message.
type guestError struct{ msg string }

func (g *guestError) Error() string { return "module returned error: " + g.msg }

// maxGuestMessage bounds how much of a module's error message is kept.
const maxGuestMessage = 1 << 10

// newInstance instantiates c: no filesystem, environment, arguments or
// network (wazero grants none unless configured), stdout and stderr to a
// bounded debug log, memory capped by the runtime, and the WASI reactor
// initialiser run with the engine's deadline.
func (c *compiled) newInstance(ctx context.Context, log *slog.Logger) (*instance, error) {
	out := &guestOutput{log: log.With("sha256", c.hash[:12]), left: maxGuestOutput}
	mc := wazero.NewModuleConfig().
		// Anonymous: the same module instantiates several times (serving,
		// self-test, replacement) and names must be unique in a runtime.
		WithName("").
		WithStartFunctions(abi.ExportInitialize).
		WithStdout(out).
		WithStderr(out)
	ctx, cancel := c.e.deadline(ctx)
	defer cancel()
	mod, err := c.e.rt.InstantiateModule(ctx, c.cm, mc)
	if err != nil {
		return nil, fmt.Errorf("instantiate: %w", describe(err))
	}
	// A start function that exits with code 0 leaves a closed module and
	// no error.
	if mod.IsClosed() {
		return nil, errors.New("instantiate: module exited during initialization")
	}
	in := &instance{c: c, mod: mod, mem: mod.ExportedMemory(memoryExport)}
	for i, x := range exports {
		in.fns[i] = mod.ExportedFunction(x.name)
	}
	return in, nil
}

// close closes the instance; its compiled module stays.
func (in *instance) close(ctx context.Context) {
	if in != nil {
		_ = in.mod.Close(ctx)
	}
}

// deadline returns ctx bounded by the engine's per-call timeout. The trusted
// engine has none, and its cancel func is a static no-op, so the trusted
// decision path does not allocate.
func (e *engine) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.timeout <= 0 {
		return ctx, nop
	}
	return context.WithTimeout(ctx, e.timeout)
}

func nop() {}

// call runs export f with input (nil for the exports without a parameter)
// and returns a view of its result in guest memory, valid until the next
// call into the instance.
func (in *instance) call(ctx context.Context, f int, input []byte) ([]byte, error) {
	ctx, cancel := in.c.e.deadline(ctx)
	defer cancel()
	if exports[f].params != nil {
		if err := in.write(ctx, input); err != nil {
			return nil, err
		}
		in.stack[0] = api.EncodeI32(int32(len(input)))
	}
	if err := in.fns[f].CallWithStack(ctx, in.stack[:]); err != nil {
		return nil, fmt.Errorf("%s: %w", exports[f].name, describe(err))
	}
	r := int64(in.stack[0])
	failed := r < 0
	u := uint64(r)
	if failed {
		u = uint64(-r)
	}
	ptr, n := uint32(u>>32), uint32(u)
	view, ok := in.mem.Read(ptr, n)
	if !ok {
		return nil, fmt.Errorf("%s: %w", exports[f].name,
			violationf("result [%d, +%d) outside memory of %d bytes", ptr, n, in.mem.Size()))
	}
	if failed {
		if len(view) > maxGuestMessage {
			view = view[:maxGuestMessage]
		}
		return nil, fmt.Errorf("%s: %w", exports[f].name, &guestError{msg: strings.ToValidUTF8(string(view), "\uFFFD")})
	}
	return view, nil
}

// write copies input into the guest's input buffer.
func (in *instance) write(ctx context.Context, input []byte) error {
	n := uint32(len(input))
	if in.bufPtr == 0 || n > in.bufLen {
		size := max(n, minInput)
		in.stack[0] = api.EncodeI32(int32(size))
		if err := in.fns[fnBuffer].CallWithStack(ctx, in.stack[:]); err != nil {
			return fmt.Errorf("%s: %w", abi.ExportBuffer, describe(err))
		}
		ptr := api.DecodeU32(in.stack[0])
		if ptr == 0 {
			return fmt.Errorf("%s: %w", abi.ExportBuffer, violationf("no buffer for %d bytes", size))
		}
		if _, ok := in.mem.Read(ptr, size); !ok {
			return fmt.Errorf("%s: %w", abi.ExportBuffer,
				violationf("buffer [%d, +%d) outside memory of %d bytes", ptr, size, in.mem.Size()))
		}
		in.bufPtr, in.bufLen = ptr, size
	}
	if !in.mem.Write(in.bufPtr, input) {
		return fmt.Errorf("%s: %w", abi.ExportBuffer, violationf("buffer at %d outside memory", in.bufPtr))
	}
	return nil
}

// describe turns wazero's call errors into messages an operator can act on.
func describe(err error) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("call timed out: %w", err)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("call canceled: %w", err)
		}
		return fmt.Errorf("module exited with code %d: %w", exit.ExitCode(), err)
	}
	return err
}

func (in *instance) abiVersion(ctx context.Context) (uint32, error) {
	ctx, cancel := in.c.e.deadline(ctx)
	defer cancel()
	if err := in.fns[fnABIVersion].CallWithStack(ctx, in.stack[:]); err != nil {
		return 0, fmt.Errorf("%s: %w", abi.ExportABIVersion, describe(err))
	}
	return api.DecodeU32(in.stack[0]), nil
}

func (in *instance) init(ctx context.Context, cfg *abi.Config) (abi.Info, error) {
	in.in = abi.AppendConfig(in.in[:0], cfg)
	res, err := in.call(ctx, fnInit, in.in)
	if err != nil {
		return abi.Info{}, err
	}
	info, err := abi.DecodeInfo(res)
	if err != nil {
		return abi.Info{}, fmt.Errorf("%s: %w", abi.ExportInit, violationf("result: %v", err))
	}
	if !utf8.ValidString(info.Name) || !utf8.ValidString(info.Version) {
		return abi.Info{}, fmt.Errorf("%s: %w", abi.ExportInit, violationf("name or version is not UTF-8"))
	}
	return info, nil
}

// decide returns one verdict per header, each with known codes, in a slice
// the instance reuses.
func (in *instance) decide(ctx context.Context, hs []abi.Header) ([]abi.Verdict, error) {
	in.in = abi.AppendHeaderBatch(in.in[:0], hs)
	res, err := in.call(ctx, fnDecide, in.in)
	if err != nil {
		return nil, err
	}
	in.verdicts, err = abi.DecodeVerdicts(res, in.verdicts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abi.ExportDecide, violationf("result: %v", err))
	}
	if len(in.verdicts) != len(hs) {
		return nil, fmt.Errorf("%s: %w", abi.ExportDecide, violationf("%d verdicts for %d headers", len(in.verdicts), len(hs)))
	}
	for i, v := range in.verdicts {
		if !v.Valid() {
			return nil, fmt.Errorf("%s: %w", abi.ExportDecide,
				violationf("unknown verdict action %d reason %d for header %d", v.Action, v.Reason, i))
		}
	}
	return in.verdicts, nil
}

func (in *instance) modeChange(ctx context.Context, mc *abi.ModeChange) error {
	in.in = abi.AppendModeChange(in.in[:0], mc)
	_, err := in.call(ctx, fnModeChange, in.in)
	return err
}

// snapshot decodes the module's state into dst, reusing dst.Extra's
// capacity; dst is untouched on error.
func (in *instance) snapshot(ctx context.Context, dst *abi.State) error {
	res, err := in.call(ctx, fnSnapshot, nil)
	if err != nil {
		return err
	}
	s, err := abi.DecodeState(res)
	if err != nil {
		return fmt.Errorf("%s: %w", abi.ExportSnapshot, violationf("result: %v", err))
	}
	// s.Extra aliases guest memory, which the next call may overwrite.
	s.Extra = append(dst.Extra[:0], s.Extra...)
	*dst = s
	return nil
}

func (in *instance) restore(ctx context.Context, s *abi.State) error {
	in.in = abi.AppendState(in.in[:0], s)
	_, err := in.call(ctx, fnRestore, in.in)
	return err
}

// maxGuestOutput bounds what one instance may write to stdout and stderr
// over its life; a module printing in a loop must not flood the logs.
const maxGuestOutput = 64 << 10

// guestOutput logs a module's stdout and stderr at debug level.
type guestOutput struct {
	log  *slog.Logger
	mu   sync.Mutex
	left int
}

func (g *guestOutput) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.left <= 0 {
		return len(p), nil
	}
	msg := p
	if len(msg) > g.left {
		msg = msg[:g.left]
	}
	g.left -= len(msg)
	g.log.Debug("guest output", "text", strings.TrimRight(strings.ToValidUTF8(string(msg), "\uFFFD"), "\n"))
	if g.left <= 0 {
		g.log.Debug("guest output limit reached; dropping the rest", "limit", maxGuestOutput)
	}
	return len(p), nil
}
