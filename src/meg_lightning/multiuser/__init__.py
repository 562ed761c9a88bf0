"""Multi-user MEG: K users in one frame over TDMA or NOMA with the registered channel models and
schemes (:mod:`.access`: the frame plans; :mod:`.noma`: the superposed NOMA receivers;
:mod:`.placement`: 3GPP UMi user drops), the users-served sweep of `meg eval-multiuser`
(:mod:`.sweep`), and the allocation across users learned by PPO, `meg train-alloc`
(:mod:`.allocation`: the model and the env; :mod:`.learn`: the command). docs/MULTIUSER.md."""

from meg_lightning.multiuser.access import (
    ACCESS,
    Slot,
    UserLink,
    frame_energy,
    frame_links,
    jain_index,
    noma_links,
    pairs,
    plan_frame,
    tdma_links,
    user_snrs,
)

__all__ = ["ACCESS", "Slot", "UserLink", "frame_energy", "frame_links", "jain_index",
           "noma_links", "pairs", "plan_frame", "tdma_links", "user_snrs"]
