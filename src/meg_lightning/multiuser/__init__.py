"""Multi-user MEG (issue 26, first slice): K users in one frame over TDMA or NOMA with the
registered channel models and schemes (:mod:`.access`), and the users-served sweep of
`meg eval-multiuser` (:mod:`.sweep`). docs/MULTIUSER.md."""

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
