"""The scaling-law toolkit in one import; each law lives in its own module.

  laws_chinchilla  L = E + A/N^alpha + B/D^beta (approach 3, Besiroglu et al.), allocations
  laws_approaches  approaches 1 (curve envelope) and 2 (isoFLOP parabolas), power-law fits
  laws_datacons    the data-constrained law (Muennighoff et al.): R_D*, R_N*
  laws_kaplan      Kaplan et al.: L(N), L(D), L(C_min) power laws and the joint L(N, D)
  plan             compute-optimal size and epochs at a (C, U) budget, per family
  crossover        critical compute where diffusion overtakes AR, and C_crit(U)
  doubledescent    significant rise-and-fall detection on loss series
"""

from analysis.crossover import critical_compute, fit_c_crit, frontier
from analysis.doubledescent import detect as detect_double_descent
from analysis.laws_approaches import approach1, approach2, fit_power_law
from analysis.laws_chinchilla import allocation, bootstrap as bootstrap_chinchilla
from analysis.laws_chinchilla import fit as fit_chinchilla
from analysis.laws_chinchilla import predict as predict_chinchilla
from analysis.laws_datacons import bootstrap as bootstrap_datacons
from analysis.laws_datacons import fit as fit_datacons
from analysis.laws_datacons import make_spec as datacons_spec
from analysis.laws_datacons import predict as predict_datacons
from analysis.laws_kaplan import fit_all as fit_kaplan
from analysis.plan import optimum as optimal_allocation

__all__ = [
    "allocation", "approach1", "approach2", "bootstrap_chinchilla", "bootstrap_datacons",
    "critical_compute", "datacons_spec", "detect_double_descent", "fit_c_crit",
    "fit_chinchilla", "fit_datacons", "fit_kaplan", "fit_power_law", "frontier",
    "optimal_allocation", "predict_chinchilla", "predict_datacons",
]
