/* synthetic.h: the patterns behind the theory's data model, for tests and
 * for measuring what a trained router or expert has learned. */
#ifndef PMOE_DATA_SYNTHETIC_H
#define PMOE_DATA_SYNTHETIC_H

#include "data/dataset.h"

/* Pattern `which` (d values) of a dataset made by pmoe_synthetic_open:
 * 0 = o1 (y = +1), 1 = o2 (y = -1), 2 + c = irrelevant pattern q_c,
 * c < data.synthetic_clusters. NULL for another dataset or an index out of
 * range. */
const double *pmoe_synthetic_pattern(const pmoe_dataset *ds, int which);

#endif
