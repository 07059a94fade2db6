"""A ReLU whose output only a linear node reads, bounded in that node's input pass
(a base of difference.DiffTracker). The ReLU's difference pass (x, D and y read, Dy
written) and the linear node's (h = y and D = Dy read again, u~ written) become one
pass that never makes Dy (verified.relu_inputs): the same values and norms, bit for
bit, so radii do not change. The ReLU's bookkeeping waits for its reader: nothing
else reads its output, and its arrays (the pass's z, the estimate, y) stay until the
reader's own pass. Uses DiffTracker's readers, _deferred, _pre, _mode, _out, _done,
_sum, graph, bits, r."""
from lrmpi.nn.graph import LINEAR_OPS
from lrmpi.nn.verified import U1, relu_inputs

FUSED = object()   # D of such a ReLU's output: not an array; its reader reads only its
# norm (N, set with it)


class ReluWithReader:

    def _fuses(self, node):
        """Whether a ReLU's pass can wait for its one reader: a linear node (not the
        logits' ReLU, not a reader in mode f64, which reads D itself)."""
        readers = self.readers.get(node.output, ())
        if len(readers) != 1 or node.output == self.graph.output:
            return False
        nxt = readers[0]
        return nxt.op in LINEAR_OPS and nxt.inputs[0] == node.output and \
            self._mode(nxt) != "f64"

    def _resolve(self, node, e):
        """The deferred ReLU feeding linear `node` (e: its input's exponents), if any:
        the ReLU's radius and D's norm, and node's linear_inputs values, in one pass."""
        rec = self._deferred.pop(node.inputs[0], None)
        if rec is None:
            return
        relu, x, D, y, bx, L = rec
        *pre, nw, nDy = relu_inputs(x, D, y, e, self.bits, self.r,
                                    min(self._mode(node), self.r), self._out(node, "ut"))
        self._pre[node.output] = tuple(pre)
        rw = U1 * nw                                                 # w's rounding
        self._done(relu, FUSED, self._sum({"carried": L * bx,
                                           "estimate_rounding": L * rw + U1 * nDy}), nD=nDy)
