"""Torsional-GFN (arXiv:2507.11759): a conditional GFlowNet over the torsion angles of a molecule.

Chemistry layer (plain RDKit / OpenMM / numpy, no Ray):
    molecule.py       SMILES -> Molecule (explicit H, ETKDG + MMFF relaxed conformer, torsion quadruples)
    conformer.py      set / measure dihedral angles on a batch of conformers (Rodrigues rotation)
    energy_rdkit.py   RDKitEnergy: one MMFF force field per (molecule, local structure), reused
    mmff_openmm.py    MMFF94 / MMFF94s as an OpenMM System of Custom*Forces from RDKit's parameters
    energy_openmm.py  OpenMMEnergy: one Context per (molecule, local structure)
    energy_torch.py   TorchTorsionalEnergy: the same energy batched over mixed entries in torch, exact dE/dtorsion
    md.py             Langevin MD frames (local structures), cached on disk

Learning layer (plain PyTorch):
    torus.py          wrapped-normal kernels, trajectories over the torus, log R = -E/kT (applied once)
    features.py       MolecularGraph of one (molecule, local structure); collate mixes molecules in a batch
    policy.py         TorsionPolicy (message passing, per-torsion drift + annealed score step) and ConditionalLogZ
    smoothed_score.py grad log of the target smoothed by the remaining noise (Tweedie probes), the drift's guide
    ground_truth.py   exact Boltzmann density on a torus grid; JSD / KL / log Z error / ESS / energy W1
    config.py         TorsionalConfig (defaults in one place)
    data.py           the dataset: MD local structures of training and validation molecules, by split
    learner.py        TorsionalLearner: sample, energies, TB / VarGrad step, evaluation against the grid
    replay.py         StructureReplayBuffer: per-structure terminal states, seeded with MD torsions
    run_local.py      the training loop in one process (no Ray, no MLflow), for debugging and tuning
    export.py         evaluation files (structures.sdf, torsions.json, samples.parquet, model.pt) and back
"""
