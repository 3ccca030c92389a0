// tap's `before` (package.json): builds the control plane (control-plane/dist) once per run,
// since the bins every CLI and process test starts run the built code, as a production
// install does. The dashboard is not built here: its tests build their own into temp dirs.
import { buildControlPlane } from '../control-plane/src/build.ts';

await buildControlPlane();
