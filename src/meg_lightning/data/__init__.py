"""Prompts, the on-disk latent cache and the LightningDataModules that serve it."""

from meg_lightning.data.datamodule import (
                                           LatentDataModule,
                                           TensorLatentDataModule,
                                           build_datamodule,
                                           split_indices,
)

__all__ = ["LatentDataModule", "TensorLatentDataModule", "build_datamodule", "split_indices"]
