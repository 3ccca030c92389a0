import type { Language } from './rules.ts';

/**
 * Which Cloud Native Buildpacks builder (or buildpack) a scan recommends, by language.
 *
 * | language          | buildpack                                  | why |
 * |-------------------|--------------------------------------------|-----|
 * | python            | gcr.io/buildpacks/builder:v1               | the public contract's own example answer for a FastAPI repo; Google's builder also infers a gunicorn/uvicorn entrypoint |
 * | node, go, java, kotlin, dotnet | paketobuildpacks/builder-jammy-base | Paketo's base builder carries the Node.js, Go, Java, .NET and Procfile buildpacks |
 * | static            | paketobuildpacks/builder-jammy-base        | the base builder's NGINX buildpack serves the files |
 * | ruby, php         | paketobuildpacks/builder-jammy-full        | Ruby and PHP buildpacks ship in the full builder (PHP only there; Ruby has left the base builder's newer releases) and need its C libraries |
 * | rust              | docker.io/paketocommunity/rust             | no Paketo builder includes Rust; the community meta-buildpack (used with a Paketo builder) does |
 * | elixir            | paketobuildpacks/builder-jammy-full        | no maintained Cloud Native Buildpack exists for Elixir; the full builder runs a Procfile, and a Dockerfile is the dependable route (the note says so) |
 * | unknown           | paketobuildpacks/builder-jammy-full        | the broadest builder, for repos the classifier could not place |
 *
 * Only Python departs from Paketo, to answer exactly as the contract's example does.
 */
export const BUILDPACKS: Record<Language | 'unknown', { uri: string; note: string | null }> = {
  python: { uri: 'gcr.io/buildpacks/builder:v1', note: null },
  node: { uri: 'paketobuildpacks/builder-jammy-base', note: null },
  go: { uri: 'paketobuildpacks/builder-jammy-base', note: null },
  java: { uri: 'paketobuildpacks/builder-jammy-base', note: null },
  kotlin: { uri: 'paketobuildpacks/builder-jammy-base', note: null },
  dotnet: { uri: 'paketobuildpacks/builder-jammy-base', note: null },
  static: { uri: 'paketobuildpacks/builder-jammy-base', note: 'Served by the NGINX buildpack (set BP_WEB_SERVER=nginx).' },
  ruby: { uri: 'paketobuildpacks/builder-jammy-full', note: null },
  php: { uri: 'paketobuildpacks/builder-jammy-full', note: null },
  rust: {
    uri: 'docker.io/paketocommunity/rust',
    note: 'A community buildpack: use it with a Paketo builder (pack build --buildpack docker.io/paketocommunity/rust).',
  },
  elixir: {
    uri: 'paketobuildpacks/builder-jammy-full',
    note: 'No maintained Cloud Native Buildpack builds Elixir releases; add a Dockerfile (mix phx.gen.release --docker) for a dependable build.',
  },
  unknown: { uri: 'paketobuildpacks/builder-jammy-full', note: 'The language was not recognised; the broadest Paketo builder is suggested.' },
};

/** Static sites built by a Node generator still build with the Node.js buildpack, then NGINX serves the output. */
export function buildpackFor(language: Language | 'unknown'): { uri: string; note: string | null } {
  return BUILDPACKS[language];
}
