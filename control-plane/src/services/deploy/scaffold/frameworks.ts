import type { ScanFacts } from './types.ts';

/**
 * What the scaffolding guesses about an app from its scan: the port its container listens
 * on, the health route, the environment it wants, the secrets it cannot boot without.
 * Each guess carries a reason, which becomes the YAML comment and a line of the pull
 * request body, so a wrong guess is easy to spot and to change.
 */
export interface FrameworkDefaults {
  /** What the scan found, in words ("Express (Node.js)"). */
  label: string;
  appPort: number;
  portReason: string;
  healthcheckPath: string;
  /** Null when the framework answers the health path out of the box; else what to add. */
  healthcheckHint: string | null;
  /** For a route the framework has only from some version on: which, and what older apps add. */
  healthcheckSince: string | null;
  /** Plain environment variables for the container. */
  clearEnv: Record<string, string>;
  /** Secrets the app needs at boot, read from repository secrets of the same name. */
  appSecrets: { name: string; purpose: string }[];
}

interface Entry {
  label: string;
  port: number;
  why: string;
  /** The route to add for `/up`, in the framework's own idiom; null when it already has one. */
  up: string | null;
  env?: Record<string, string>;
  secrets?: { name: string; purpose: string }[];
  /** Health path when `/up` does not fit (static files). */
  health?: string;
  /** When `up` is null because recent versions have the route: which versions, and what older ones need. */
  upSince?: string;
}

const NODE_UP = "app.get('/up', (req, res) => res.sendStatus(200))";
const NODE_ENV = { NODE_ENV: 'production' };

/** Keyed by `<language>/<framework>`; `<language>/*` is the language's fallback. */
const TABLE: Record<string, Entry> = {
  'node/express': { label: 'Express (Node.js)', port: 3000, why: "Express apps listen on PORT, 3000 by Express's own examples", up: NODE_UP, env: NODE_ENV },
  'node/fastify': { label: 'Fastify (Node.js)', port: 3000, why: "Fastify's documentation listens on 3000", up: "fastify.get('/up', async () => ({ ok: true }))", env: NODE_ENV },
  'node/nestjs': { label: 'NestJS (Node.js)', port: 3000, why: "Nest's generated main.ts listens on PORT or 3000", up: "a controller method with @Get('up') returning 200", env: NODE_ENV },
  'node/nextjs': { label: 'Next.js', port: 3000, why: '`next start` listens on PORT or 3000', up: 'app/up/route.ts exporting `GET() { return new Response("ok") }`', env: NODE_ENV },
  'node/nuxt': { label: 'Nuxt', port: 3000, why: "Nuxt's Node server listens on PORT or 3000", up: 'server/routes/up.ts returning "ok"', env: NODE_ENV },
  'node/remix': { label: 'Remix', port: 3000, why: '`remix-serve` listens on PORT or 3000', up: 'app/routes/up.ts with a loader returning a 200 Response', env: NODE_ENV },
  'node/sveltekit': { label: 'SvelteKit', port: 3000, why: "adapter-node's server listens on PORT or 3000", up: 'src/routes/up/+server.ts with `GET` returning a 200 Response', env: NODE_ENV },
  'node/astro': { label: 'Astro', port: 4321, why: "Astro's Node adapter listens on PORT or 4321", up: 'src/pages/up.ts with `GET` returning a 200 Response', env: NODE_ENV },
  'node/gatsby': { label: 'Gatsby (static site)', port: 80, why: 'a static site served by a web server on port 80', up: null, health: '/' },
  'node/eleventy': { label: 'Eleventy (static site)', port: 80, why: 'a static site served by a web server on port 80', up: null, health: '/' },
  'node/vite': { label: 'Vite (static build)', port: 80, why: 'a static build served by a web server on port 80', up: null, health: '/' },
  'node/*': { label: 'Node.js', port: 3000, why: 'Node.js servers conventionally listen on PORT, 3000 by default', up: NODE_UP, env: NODE_ENV },

  'python/django': {
    label: 'Django (Python)',
    port: 8000,
    why: "gunicorn's and `manage.py runserver`'s default port is 8000",
    up: "path('up', lambda request: HttpResponse('ok')) in urls.py",
    env: { PYTHONUNBUFFERED: '1' },
  },
  'python/fastapi': { label: 'FastAPI (Python)', port: 8000, why: "uvicorn's default port is 8000", up: '@app.get("/up") returning {"ok": True}', env: { PYTHONUNBUFFERED: '1' } },
  'python/flask': {
    label: 'Flask (Python)',
    port: 8000,
    why: "gunicorn's default port is 8000 (`flask run` uses 5000, which is for development)",
    up: '@app.get("/up") returning "ok"',
    env: { PYTHONUNBUFFERED: '1' },
  },
  'python/*': { label: 'Python', port: 8000, why: "gunicorn's and uvicorn's default port is 8000", up: 'a GET /up route answering 200', env: { PYTHONUNBUFFERED: '1' } },

  'ruby/rails': {
    label: 'Ruby on Rails',
    port: 3000,
    why: '`rails server` listens on 3000',
    // Rails 7.1+ generates `get "up" => "rails/health#show"`.
    up: null,
    upSince: 'Rails 7.1 and later; on an older app add `get "up" => proc { [200, {}, ["ok"]] }` to config/routes.rb',
    env: { RAILS_ENV: 'production', RAILS_LOG_TO_STDOUT: '1' },
    secrets: [{ name: 'RAILS_MASTER_KEY', purpose: 'decrypts config/credentials.yml.enc (the contents of config/master.key)' }],
  },
  'ruby/sinatra': { label: 'Sinatra (Ruby)', port: 4567, why: "Sinatra's default port is 4567", up: "get('/up') { 'ok' }", env: { RACK_ENV: 'production' } },
  'ruby/jekyll': { label: 'Jekyll (static site)', port: 80, why: 'a static site served by a web server on port 80', up: null, health: '/' },
  'ruby/*': { label: 'Ruby (Rack)', port: 9292, why: "rackup's default port is 9292", up: 'a GET /up route answering 200', env: { RACK_ENV: 'production' } },

  'go/gin': { label: 'Gin (Go)', port: 8080, why: "gin's Run() listens on PORT or 8080", up: 'r.GET("/up", func(c *gin.Context) { c.String(200, "ok") })' },
  'go/echo': { label: 'Echo (Go)', port: 1323, why: "Echo's documentation starts servers on :1323", up: 'e.GET("/up", func(c echo.Context) error { return c.String(200, "ok") })' },
  'go/fiber': { label: 'Fiber (Go)', port: 3000, why: "Fiber's documentation listens on :3000", up: 'app.Get("/up", func(c *fiber.Ctx) error { return c.SendString("ok") })' },
  'go/net/http': { label: 'Go net/http', port: 8080, why: 'Go HTTP servers conventionally listen on 8080', up: 'http.HandleFunc("/up", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })' },
  'go/*': { label: 'Go', port: 8080, why: 'Go HTTP servers conventionally listen on 8080', up: 'a GET /up handler answering 200' },

  'php/laravel': {
    label: 'Laravel (PHP)',
    port: 80,
    why: 'PHP images (php:apache, serversideup/php) serve on port 80',
    // Laravel 11+ registers /up in bootstrap/app.php (`health: '/up'`).
    up: null,
    upSince: "Laravel 11 and later; on an older app add `Route::get('/up', fn () => 'ok');` to routes/web.php",
    secrets: [{ name: 'APP_KEY', purpose: "Laravel's encryption key (`php artisan key:generate --show`)" }],
  },
  'php/symfony': { label: 'Symfony (PHP)', port: 80, why: 'PHP images (php:apache, serversideup/php) serve on port 80', up: 'a controller with #[Route(\'/up\')] returning a 200 Response', env: { APP_ENV: 'prod' } },
  'php/*': { label: 'PHP', port: 80, why: 'PHP images (php:apache) serve on port 80', up: 'an up.php (or /up route) answering 200' },

  'java/spring-boot': { label: 'Spring Boot (Java)', port: 8080, why: "Spring Boot's server.port defaults to 8080", up: 'a @GetMapping("/up") returning 200 (or point the health path at /actuator/health)' },
  'java/quarkus': { label: 'Quarkus (Java)', port: 8080, why: "Quarkus's quarkus.http.port defaults to 8080", up: 'a @GET @Path("/up") resource returning 200 (or point the health path at /q/health)' },
  'java/*': { label: 'Java', port: 8080, why: 'Java web servers conventionally listen on 8080', up: 'a GET /up endpoint answering 200' },
  'kotlin/spring-boot': { label: 'Spring Boot (Kotlin)', port: 8080, why: "Spring Boot's server.port defaults to 8080", up: 'a @GetMapping("/up") returning 200 (or point the health path at /actuator/health)' },
  'kotlin/quarkus': { label: 'Quarkus (Kotlin)', port: 8080, why: "Quarkus's quarkus.http.port defaults to 8080", up: 'a @GET @Path("/up") resource returning 200 (or point the health path at /q/health)' },
  'kotlin/*': { label: 'Kotlin', port: 8080, why: 'JVM web servers conventionally listen on 8080', up: 'a GET /up endpoint answering 200' },

  'elixir/phoenix': {
    label: 'Phoenix (Elixir)',
    port: 4000,
    why: "Phoenix's endpoint listens on PORT or 4000",
    up: 'get "/up", HealthController, :show in the router (a plug answering 200)',
    env: { PHX_SERVER: 'true', MIX_ENV: 'prod' },
    secrets: [{ name: 'SECRET_KEY_BASE', purpose: 'signs and encrypts cookies (`mix phx.gen.secret`)' }],
  },
  'elixir/*': { label: 'Elixir', port: 4000, why: 'Elixir web servers conventionally listen on 4000', up: 'a GET /up route answering 200' },

  'rust/axum': { label: 'axum (Rust)', port: 3000, why: "axum's examples listen on 3000", up: '.route("/up", get(|| async { "ok" }))' },
  'rust/actix': { label: 'Actix Web (Rust)', port: 8080, why: "Actix Web's examples bind 8080", up: '.route("/up", web::get().to(|| async { "ok" }))' },
  'rust/*': { label: 'Rust', port: 8080, why: 'Rust web servers conventionally listen on 8080', up: 'a GET /up route answering 200' },

  'dotnet/aspnetcore': {
    label: 'ASP.NET Core',
    port: 8080,
    why: '.NET 8+ container images listen on 8080 (ASPNETCORE_HTTP_PORTS)',
    up: 'app.MapGet("/up", () => "ok");',
  },
  'dotnet/*': { label: '.NET', port: 8080, why: '.NET 8+ container images listen on 8080', up: 'a GET /up endpoint answering 200' },

  'static/*': { label: 'static site', port: 80, why: 'static files served by a web server on port 80', up: null, health: '/' },
  'unknown/*': { label: 'an app VMKit could not classify', port: 80, why: "Kamal's default app_port, 80; the scan could not tell the framework", up: 'a GET /up route answering 200' },
};

export function frameworkDefaults(scan: ScanFacts): FrameworkDefaults {
  const language = scan.language ?? 'unknown';
  const exact = scan.framework !== null ? TABLE[`${language}/${scan.framework}`] : undefined;
  const entry = exact ?? TABLE[`${language}/*`] ?? TABLE['unknown/*'];
  // The table always holds 'unknown/*'; this only satisfies noUncheckedIndexedAccess.
  if (!entry) throw new Error('framework table lost its fallback');
  let port = entry.port;
  let why = entry.why;
  // PORT tells the app where to listen, so it matches app_port; static sites are served by a web server that ignores it.
  let setPort = entry.health === undefined;
  // Rails 7.1+ generates a Dockerfile; Rails 8's runs Thruster on port 80 in front of
  // Puma, and Puma reads PORT: setting PORT=80 would put both on one port.
  if (language === 'ruby' && scan.framework === 'rails' && scan.dockerfile_detected === true) {
    port = 80;
    why = "the Dockerfile Rails 8 generates runs Thruster on port 80 (Rails 7.1's exposes 3000: set 3000 if yours does)";
    setPort = false;
  }
  const health = entry.health ?? '/up';
  return {
    label: entry.label,
    appPort: port,
    portReason: why,
    healthcheckPath: health,
    healthcheckHint: entry.up,
    healthcheckSince: entry.upSince ?? null,
    clearEnv: { ...(entry.env ?? {}), ...(setPort ? { PORT: String(port) } : {}) },
    appSecrets: entry.secrets ?? [],
  };
}
