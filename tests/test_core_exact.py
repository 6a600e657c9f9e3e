"Exact checks of the core modules not on the path of a planted bug (gaussian, imf, metrics, checkpoint): the rest of the mutation-testing subset."
