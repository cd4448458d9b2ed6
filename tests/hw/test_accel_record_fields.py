"""The record parser (:class:`tokensift.hw.accel.rows.RecordFields`): at every bus width and skew, with random gaps
between the words (the bus carrying garbage in them), each field is its record's 64-bit slot the cycle ``done``
pulses, after the word with ``last``, and stays so until the next record starts; back-to-back records of
different contents each come out whole."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from amaranth_streams import run_to_completion

from tokensift.hw.accel.config import AccelConfig
from tokensift.hw.accel.rows import RecordFields
from tokensift.hw.axi.config import AxiDmaConfig
from tokensift.quant.accel.image import Envelope

ENV = Envelope(max_tokens=8, width=32, heads=2, mlp_hidden=64, depth=1, classes=10, patch_size=4, in_chans=1,
               patches=4, res_bits=16, prob_frac=15, stages=1, head_dim=16)
FIELDS = {"header": 0, "b": 8, "c": 24, "d": 32}
LENGTH = 40


def _words(record: bytes, skew: int, db: int) -> list[int]:
    """The bus words of a command for ``record`` placed at byte ``skew`` of its first word."""
    raw = bytes(skew) + record
    raw += bytes(-len(raw) % db)
    return [int.from_bytes(raw[i:i + db], "little") for i in range(0, len(raw), db)]


@pytest.mark.parametrize("db", [4, 8, 16, 32])
@pytest.mark.parametrize("gap", [0.0, 0.5])
def test_fields_are_their_slots_when_done_and_stay_until_the_next_start(db, gap):
    dut = RecordFields(config=AccelConfig(envelope=ENV, axi=AxiDmaConfig(data_bytes=db)), fields=FIELDS,
                       length=LENGTH)
    rng = random.Random(db * 10 + int(gap * 10))
    skews = list(range(0, max(db, 8), 8)) if db >= 8 else [0]
    records = [(bytes(rng.randrange(256) for _ in range(LENGTH)), rng.choice(skews)) for _ in range(6)]
    checked = []

    async def tb(ctx):
        for record, skew in records:
            ctx.set(dut.skew, skew)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            words = _words(record, skew, db)
            for i, word in enumerate(words):
                while rng.random() < gap:  # a gap: garbage on the bus, no valid
                    ctx.set(dut.i_word.valid, 0)
                    ctx.set(dut.i_word.payload.data, rng.randrange(1 << (8 * db)))
                    ctx.set(dut.i_word.payload.last, rng.randrange(2))
                    assert not ctx.get(dut.done)
                    await ctx.tick()
                ctx.set(dut.i_word.valid, 1)
                ctx.set(dut.i_word.payload.data, word)
                ctx.set(dut.i_word.payload.last, i == len(words) - 1)
                assert not ctx.get(dut.done)
                await ctx.tick()
            want = {name: int.from_bytes(record[at:at + 8], "little") for name, at in FIELDS.items()}
            assert ctx.get(dut.done)
            for quiet in range(4):  # garbage on the idle bus leaves the fields alone
                assert {name: ctx.get(getattr(dut.fields, name)) for name in FIELDS} == want, (skew, quiet)
                ctx.set(dut.i_word.valid, 0)
                ctx.set(dut.i_word.payload.data, rng.randrange(1 << (8 * db)))
                await ctx.tick()
                assert not ctx.get(dut.done)
            checked.append(skew)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    assert run_to_completion(sim, max_cycles=5000)
    assert len(checked) == len(records)
