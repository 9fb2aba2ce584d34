"""Torsional-GFN (arXiv:2507.11759): a conditional GFlowNet over the torsion angles of a molecule.

Chemistry layer (plain RDKit / OpenMM / numpy, no Ray):
    molecule.py       SMILES -> Molecule (explicit H, ETKDG + MMFF relaxed conformer, torsion quadruples)
    conformer.py      set / measure dihedral angles on a batch of conformers (Rodrigues rotation)
    energy_rdkit.py   RDKitEnergy: one MMFF force field per (molecule, local structure), reused
    mmff_openmm.py    MMFF94 / MMFF94s as an OpenMM System of Custom*Forces from RDKit's parameters
    energy_openmm.py  OpenMMEnergy: one Context per (molecule, local structure)
    md.py             Langevin MD frames (local structures), cached on disk
"""
