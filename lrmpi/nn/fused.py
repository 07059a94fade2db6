"""The resolution-r pass through the fused C layers (ext/c/nn_body.h): bit for bit
the network of quantized.py (docs/design.md, Inference), without Python loops over
pairs, planes, groups or kernel offsets.

Compiled once per model (FusedModel): every linear/conv node's weight planes
packed for this ISA (all planes; resolution r reads the first r), the activation
after it absorbed when the node's output has no other reader, and, when the only
reader of that activation is the next linear/conv node, that node's input planes
written by this node's call: no float64 array between them unless a bound tracker
asks for the values (tracker=None skips them). One C call per node and batch does
the im2col, all r^2 pair products (level sums in int32), the one rounding, bias,
activation and the next planes. Nodes the kernels do not take (grouped convs
that are not depthwise; r k past kmax) go through quantized.linear_at; every
other node is ops.apply in float64, as in the reference.
"""
import time
from types import SimpleNamespace

import numpy as np

from lrmpi import stages
from lrmpi.nn import ops, packed_cache
from lrmpi.nn.fused_node import ACTIVATIONS, Buffers, FusedNode
from lrmpi.nn.graph import LINEAR_OPS
from lrmpi.numerics import kernels, kernels_nn as K


class FusedModel:
    """A graph compiled for the fused kernels (see the module docstring)."""

    def __init__(self, graph, weights, bits, isa=None):
        self.graph, self.weights, self.bits = graph, weights, bits
        self.isa = isa or kernels.selected_isa()
        scratch = Buffers()  # the weights' digits on their way to being packed
        key = packed_cache.key(graph, weights, self.isa) if packed_cache.worth(weights) \
            else None  # a small model is packed again: less than looking it up
        kept = (packed_cache.load(key) if key else None) or {}
        self.packed_key = key if kept else None  # mapped from the cache: forward checks it
        self.nodes = {n.output: FusedNode(n, weights[n.output], graph.shapes, self.isa, scratch,
                                          kept.get(n.output)) for n in graph.linear}
        if key and not kept:
            packed_cache.store_later(key, {name: (fn.wpack, fn.f)
                                           for name, fn in self.nodes.items() if fn.supported})
        self.readers = {}
        for i, n in enumerate(graph.nodes):
            for t in set(n.inputs):
                self.readers.setdefault(t, []).append(i)
        # nodes computed inside a linear/conv node's call: a residual add (its other
        # addend computed before the node), the activation, a max pooling after it,
        # flatten/reshape nodes before the node it feeds
        order = {n.output: i for i, n in enumerate(graph.nodes)}
        self.absorbed = {}
        for fn in self.nodes.values():
            if not fn.supported:
                continue
            out = fn.node.output
            only = self._only_reader(out)
            if only is not None and only.op == "add" and len(only.inputs) == 2:
                other = only.inputs[1] if only.inputs[0] == out else only.inputs[0]
                if other != out and order.get(other, -1) < order[out]:
                    fn.res_node, fn.res_input = only, other
                    self.absorbed[only.output] = fn
                    out = only.output
                    only = self._only_reader(out)
            if only is not None and only.op in ACTIVATIONS and fn.absorb(only):
                self.absorbed[only.output] = fn
                out = only.output
                only = self._only_reader(out)
            if only is not None and fn.absorb_pool(only, graph.shapes):
                self.absorbed[only.output] = fn
                out = only.output
            chain, nxt = [], self._only_reader(out)
            while nxt is not None and nxt.op in ("flatten", "reshape"):
                chain.append(nxt)
                nxt = self._only_reader(nxt.output)
            if nxt is not None and nxt.op in LINEAR_OPS and self.nodes[nxt.output].supported \
                    and (not chain or nxt.op == "linear"):  # flat order: ROWS planes
                fn.feeds, fn.passes = self.nodes[nxt.output], chain
                self.absorbed.update({c.output: fn for c in chain})
            elif out != graph.output:  # several readers: the planes of one, the array for all
                takers = [graph.nodes[i] for i in self.readers.get(out, [])
                          if graph.nodes[i].op in LINEAR_OPS
                          and self.nodes[graph.nodes[i].output].supported]
                if takers and len(self.readers[out]) > 1:
                    fn.feeds, fn.shared = self.nodes[takers[0].output], True
        self.buffers = Buffers()
        self.times = np.zeros(4)  # the kernels' stage times (products, decode, quantize,
        # the bound's estimate)
        self.estimates = {}  # (node, which planes) -> FusedNode of those weight planes
        self._input = None   # (node, r, its input planes) of the node being computed
    def _only_reader(self, tensor):
        readers = self.readers.get(tensor, [])
        if tensor == self.graph.output or len(readers) != 1:
            return None
        return self.graph.nodes[readers[0]]

    def forward(self, X, r, tracker=None):
        """The logits (N, outputs) of X at resolution r; with a tracker, its hook
        sees every node: tracker.linear(node, h, e, C, z), tracker.other(node, args, y)."""
        g, n = self.graph, len(X)
        last = {}
        for i, node in enumerate(g.nodes):
            for t in node.inputs:
                last[t] = i
        # the samples as given (float32 stays: the quantizer reads it; float64 copies
        # are made for the readers that compute in float64: _f64)
        X = np.ascontiguousarray(X, X.dtype if X.dtype == np.float32 else np.float64)
        env, planes = {g.input: X}, {}
        self._pending = {}  # absorbed activation -> its tracker call, made in graph order
        # linear nodes the kernels do not take at r (linear_at): what they would have
        # absorbed is computed as it comes, like any other node
        self._fallen = set()
        for i, node in enumerate(g.nodes):
            if node.output in self.absorbed and self.absorbed[node.output] not in self._fallen:
                args, y, extra = self._pending.pop(node.output, (None, None, {}))
                if tracker is not None:
                    with stages.timed("bound"):
                        tracker.other(node, args, y, **extra)
            elif node.op in LINEAR_OPS:
                self._linear(node, env, planes, r, tracker, n)
            else:
                args = [_f64(env, t) for t in node.inputs]
                with stages.timed("ops"):
                    env[node.output] = ops.apply(node, args)
                if tracker is not None:
                    with stages.timed("bound"):
                        tracker.other(node, args, env[node.output])
            for t in node.inputs:
                if last.get(t) == i and t != g.output:
                    env.pop(t, None)
        if self.packed_key is not None:  # no result of weights changed under the kernels
            packed_cache.unchanged(self.packed_key)
        # (K, 1, ..., 1) per sample: K scores (graph.py); a copy: the nodes' arrays
        # are reused by the next batch
        return np.array(env[g.output].reshape(n, -1))

    def _linear(self, node, env, planes, r, tracker, n):
        fn = self.nodes[node.output]
        self._input = None  # this node's input planes, once made (product, of_input)
        h = env.get(node.inputs[0])
        if not fn.takes(r, self.bits) or "h" in _wants(tracker, node):
            h = _f64(env, node.inputs[0])
        if not fn.takes(r, self.bits):
            from lrmpi.nn.quantized import linear_at  # nodes the kernels do not take
            self._fallen.add(fn)
            with stages.timed("products"):
                e, C, z = linear_at(node, h, self.weights[node.output], r, self.bits)
            if tracker is not None:  # arrays, no norms: the tracker computes them
                with stages.timed("bound"):
                    tracker.linear(node, h, e, C, z)
            env[node.output] = z
            return
        wants = _wants(tracker, node)
        norms = "norms" in wants
        src = planes.pop(node.output, None)
        if src is None:
            src = fn.planes_for(r, self.bits, n, self.buffers, norms)
            with stages.timed("quantize"):
                K.nn_quantize(h, src, isa=self.isa)
        self._input = (node.output, r, src)  # for product(..., of_input=True) from the hook
        shape = (n,) + fn.out_shape
        size = int(np.prod(shape))
        feeds = fn.feeds if fn.feeds is not None and fn.feeds.takes(r, self.bits) else None
        act, add = fn.act_node, fn.res_node

        def arrays(nd):
            return bool(_wants(tracker, nd) & ARRAYS)
        # the arrays someone reads: z, the residual sum a, the activation y, the pooled
        # y; the next node's planes need none of them
        last = feeds is None or fn.shared or "h" in _wants(tracker, feeds.node) or \
            any(map(arrays, fn.passes))
        pooled = fn.pool is not None and (last or arrays(fn.pool_node))
        need_y = (fn.pool is None and last) or (fn.pool is not None and arrays(fn.pool_node)) \
            or (act is not None and "y" in _wants(tracker, act)) \
            or (act is None and add is not None and arrays(add)) \
            or (act is None and add is None and "z" in wants)
        need_a = add is not None and act is not None and (arrays(add) or arrays(act))
        need_z = (act is not None or add is not None) and \
            ("z" in wants or (add is not None and arrays(add)))
        # reused from batch to batch (first touch of fresh memory is slow: Buffers)
        def out(name, wanted, count=size):
            return self.buffers.get(("out", node.output, name), (count,), np.float64) \
                if wanted else None
        Y, Z, A, C = out("y", need_y), out("z", need_z), out("a", need_a), out("C", "C" in wants)
        res = _f64(env, fn.res_input) if add is not None else None
        pshape = (n,) + fn.pooled_shape(self.graph.shapes)
        Pout = out("pooled", pooled, int(np.prod(pshape)))
        sq = self.buffers.get(("sq", node.output), (5 * n,), np.float64) if norms else None
        # the bound's estimate products in this call (the tracker's u~ quantized first;
        # that and the call's share are the bound's seconds, as the products were)
        est, prep = None, 0.0
        if getattr(tracker, "before_linear", None) is not None:
            with stages.timed("bound"):
                pre = tracker.before_linear(node, h, src.exps[:n])
                prep = time.thread_time()
                est = self._estimate(fn, pre, r, n)
                prep = time.thread_time() - prep
        nxt = None
        if feeds is not None:
            nxt = feeds.planes_for(r, self.bits, n, self.buffers,
                                   "norms" in _wants(tracker, feeds.node))
            planes[feeds.node.output] = nxt
        t = self.times
        t[:] = 0.0
        K.nn_layer(fn.spec(n, r, self.bits), src.D, src.exps, fn.wpack, fn.f, fn.bias,
                   slope=fn.slope, Cout=C, Zout=Z, Yout=Y, nxt=nxt, sq=sq, times=t,
                   pool=fn.pool, Pout=Pout, Res=None if res is None else res.reshape(-1),
                   Aout=A, isa=self.isa, estimate=est)
        stages.add("products", t[0])
        stages.add("decode", t[1])
        stages.add("quantize", t[2])
        stages.add("bound", t[3])
        made = {} if est is None else {"estimate": (est[5].reshape(shape), prep + float(t[3]))}
        y = Y.reshape(shape) if Y is not None else None
        z = Z.reshape(shape) if Z is not None else (y if act is None and add is None else None)
        a = A.reshape(shape) if A is not None else (y if act is None else None)
        if tracker is not None:
            nm = None
            if norms:
                with stages.timed("bound"):
                    nm = fn.norms(src, sq[:5 * n].reshape(n, 5), r, self.bits, n)
            with stages.timed("bound"):
                tracker.linear(node, h if "h" in wants else None, src.exps[:n].copy(),
                               C.reshape(shape) if C is not None else None, z,
                               **({"norms": nm} if nm else {}), **made)
            if add is not None:  # its hook call waits for its place in the graph
                args = [z if t == node.output else res for t in add.inputs]
                extra = {"norms": {"args": [nm["z"] if t == node.output else nm["res"]
                                            for t in add.inputs], "y": nm["a"]}} \
                    if nm and "norms" in _wants(tracker, add) else {}
                self._pending[add.output] = (args, a, extra)
            if act is not None:
                extra = {"norms": {"z": nm["a" if add is not None else "z"], "y": nm["y"]}} \
                    if nm and "norms" in _wants(tracker, act) else {}
                self._pending[act.output] = ([a if add is not None else z], y, extra)
        out = act.output if act is not None else add.output if add is not None else node.output
        if y is not None:
            env[out] = y
        if add is not None and act is not None and a is not None:
            env[add.output] = a
        if fn.pool is not None:  # the pooled activation, and its flattened views
            p = Pout.reshape(pshape) if Pout is not None else None
            self._pending[fn.pool_node.output] = ([y], p, {})
            out, val = fn.pool_node.output, p
            if p is not None:
                env[out] = p
        else:
            val = y
        for c in fn.passes:
            nv = None if val is None else val.reshape((n,) + tuple(self.graph.shapes[c.output]))
            self._pending[c.output] = ([val], nv, {})
            val = nv
            if nv is not None:
                env[c.output] = nv

    def _estimate(self, fn, pre, r, n):
        """nn_layer's `estimate` for the tracker's (u~, p, W's planes r+1..r+p)
        (DiffTracker.before_linear): u~'s p planes and their exponents, those planes
        packed (once per node and slice, as product() packs them) and the output;
        None where this call cannot make it (depthwise, p > r): the tracker then asks
        product()."""
        if pre is None:
            return None
        u, p, weights = pre
        if fn.depthwise or not 1 <= p <= r:
            return None
        wres = self._packed(fn.node, weights, ("residual", r, p), negated=False)
        src = fn.planes_for(p, self.bits, n, _Keyed(self.buffers, "estimate"))
        K.nn_quantize(np.ascontiguousarray(u, np.float64), src, isa=self.isa)
        E = self.buffers.get(("estimate-out", fn.node.output),
                             (n * int(np.prod(fn.out_shape)),), np.float64)
        return (p, src.D, src.exps, wres.wpack, wres.f, E)

    def _packed(self, node, weights, key, negated):
        """The FusedNode of other weight planes of `node` (the estimate's), packed
        once per key; negated: the digits negated and no bias (product's `minus`,
        whose key says so)."""
        est = self.estimates.get((node.output, key))
        if est is None:
            if not negated:
                est = FusedNode(node, weights, self.graph.shapes, self.isa)
            else:  # the digits negated (exact: within +-127), no bias: z = C + 0 = C
                est = FusedNode(node, _negated(weights), self.graph.shapes, self.isa)
                est.bias = np.zeros_like(est.bias)
            self.estimates[(node.output, key)] = est
        return est

    def product(self, node, x, weights, p, key, of_input=False, minus=None):
        """fl(Q_p(x) Q_p(W')^T), rounded once, no bias: the resolution-p product of
        `node` with other weights W' (`weights`: p digit planes and their exponents,
        e.g. the bound's estimate planes, difference.py), through the same kernels as
        the forward pass (bit for bit quantized.linear_at's C); `key` names W' (their
        packing is kept). `of_input`: x is the node's input in the pass now feeding the
        hook, whose first p <= r planes are Q_p(x) (the digits are cut most significant
        first, at the same per-sample exponent): they are used as they are. None where
        the kernels do not take the node. The result is a reused buffer, valid until the
        next product of the same node and key (copy what you keep longer).
        `minus`: an array P of the result's shape; then the result is fl(P - product),
        numpy's P - product bit for bit but for a zero's sign: the kernel multiplies
        the negated digits (exact: they are within +-127), whose product rounds to
        minus the product's (an exact zero is +0 either way), adds a zero bias and
        rounds the sum with P once (its residual input)."""
        fn = self.nodes.get(node.output)
        if fn is None or not fn.takes(p, self.bits):
            return None
        key = tuple(key) + (("minus",) if minus is not None else ())
        est = self._packed(node, weights, key, negated=minus is not None)
        n = len(x)
        name, r, src = self._input or (None, 0, None)
        if not (of_input and name == node.output and p <= r and src.D.shape[0] >= p):
            x = np.ascontiguousarray(x, np.float64)
            src = est.planes_for(p, self.bits, n, _Keyed(self.buffers, "estimate"))
            K.nn_quantize(x, src, isa=self.isa)
        # reused from batch to batch (the tracker's arrays live until the next pass)
        size = n * int(np.prod(est.out_shape))
        C = self.buffers.get(("estimate-out", node.output) + key, (size,), np.float64)
        if minus is None:
            K.nn_layer(est.spec(n, p, self.bits), src.D, src.exps, est.wpack, est.f, est.bias,
                       Cout=C, isa=self.isa)
        else:
            P = np.ascontiguousarray(minus, np.float64).reshape(-1)
            K.nn_layer(est.spec(n, p, self.bits), src.D, src.exps, est.wpack, est.f, est.bias,
                       Res=P, Aout=C, isa=self.isa)
        return C.reshape((n,) + est.out_shape)


def _negated(weights):
    """`weights` (p digit planes, FusedNode's `planes` and `enc`) with every digit
    negated."""
    enc = weights.enc
    return SimpleNamespace(planes=weights.planes, enc=SimpleNamespace(
        digits=np.negative(enc.digits), exps=enc.exps, planes=enc.planes))


class _Keyed:
    """Buffers under keys of their own (the estimate's planes beside the pass's)."""

    def __init__(self, buffers, tag):
        self.buffers, self.tag = buffers, tag

    def get(self, key, shape, dtype):
        return self.buffers.get((self.tag,) + key, shape, dtype)


ARRAYS = frozenset(("h", "C", "z", "y"))


def _f64(env, name):
    """env[name] as a contiguous float64 array (the samples may be float32)."""
    x = env.get(name)
    if x is not None and (x.dtype != np.float64 or not x.flags.c_contiguous):
        x = env[name] = np.ascontiguousarray(x, np.float64)
    return x


def _wants(tracker, node):
    """What the bound tracker asks of a node (nn-interface.md): `tracker.wants`, a
    set or a function of the node, of "h", "C", "z", "y" (the arrays of the hook;
    None is passed for the others) and "norms" (per-sample l2 norms from the
    kernels, a `norms=` keyword); every array without it, nothing without a tracker."""
    if tracker is None:
        return frozenset()
    w = getattr(tracker, "wants", None)
    if w is None:
        return ARRAYS
    return w(node) if callable(w) else w
